"""Chat templates: a model's jinja2 template rendered from a list of messages.

Rendered the way Hugging Face transformers renders them (sandboxed, trim_blocks,
lstrip_blocks, `raise_exception`, `tojson`, `strftime_now`), so templates written
for transformers work unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime

from ponder.errors import InvalidParameterError, PonderError

# Used when a model ships no template: plain ChatML, which is what most small
# instruct models were tuned on.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


class ChatTemplate:
    """Compiled on first use: a plain-text prompt never pays for jinja2."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.source = source or DEFAULT_TEMPLATE
        self.bos_token, self.eos_token = bos_token, eos_token
        self._compiled = None

    @property
    def _template(self):
        if self._compiled is None:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(x, indent=indent, ensure_ascii=ensure_ascii)
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._compiled = env.from_string(self.source)
            except jinja2.TemplateError as e:
                raise PonderError(f"the model's chat template does not parse: {e}") from None
        return self._compiled

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        import jinja2

        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InvalidParameterError(f"message {i} must be an object with 'role' and 'content'", "messages")
        template = self._template
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except jinja2.TemplateError as e:
            raise InvalidParameterError(f"chat template rejected the messages: {e}", "messages") from None
