"""Robot-LoRA: distributed LoRA fine-tuning of code LLMs for natural-language robot programming."""

import logging

__version__ = "0.1.0"

# bitsandbytes (the qlora extra), imported by PEFT in every process that loads a model, tries on CPUs with
# AVX512-BF16 to fetch an optional 4-bit kernel from the Hugging Face hub and warns when it cannot; its own
# kernels serve instead, so the warning in every run's output says nothing a user can act on.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
