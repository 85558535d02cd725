"""DeepSpeed config templates, installed as ``robolora.ds_configs``.

Fields set to ``"auto"`` are filled from the training config by :func:`robolora.ds_config.resolve`.
"""
