"""Robot-LoRA: distributed LoRA fine-tuning of code LLMs for natural-language robot programming."""

__version__ = "0.1.0"
