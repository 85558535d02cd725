"""DeepSpeed config templates, installed as ``robolora.ds_configs``.

Fields set to ``"auto"`` are filled from the training config by :func:`robolora.ds_config.resolve`.

The ZeRO-3 templates set ``stage3_max_reuse_distance`` to 0: a module's gathered weights are freed
after it runs, even when the backward pass will gather them again soon. With DeepSpeed's default
(10^9 elements) a small model's weights can stay gathered from the forward to the backward pass;
ZeRO-3 is chosen to save memory, and the memory planner counts one gathered module at a time. (On 2
CPU workers training the bundled model, the peak per worker was 4,049 MiB against 4,072-4,320 MiB.)
"""
