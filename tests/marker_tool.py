"""A tool for tests on the random tiny model: its trigger is any character that model writes often,
and it answers every call with the length of the text the call was read from."""

from ponder.tools import Tool, ToolCall, ToolResult


class Marker(Tool):
    name = "marker"

    def __init__(self, trigger):
        self.trigger = trigger

    def find_call(self, text):
        return ToolCall(self.name, str(len(text)))

    def run(self, call):
        return ToolResult(call, f"[{call.source}]", True, value=call.source)
