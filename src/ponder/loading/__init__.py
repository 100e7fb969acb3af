"""Reading model files: GGUF and Hugging Face checkpoints, tokenizers, chat templates, the model registry."""
