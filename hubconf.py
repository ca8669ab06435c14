"""torch.hub entry points: one per technique, named after its slug with underscores.

    import torch
    torch.hub.list("path/to/attention-atlas", source="local")           # every technique
    print(torch.hub.help("path/to/attention-atlas", "cbam", source="local"))
    cbam = torch.hub.load("path/to/attention-atlas", "cbam", channels=64, reduction=8, source="local")
    out = cbam(x=torch.randn(2, 64, 28, 28))                            # {"output", "channel_weights", ...}
"""

dependencies = ["torch"]

from service.hub import entry_points as _entry_points  # noqa: E402

globals().update(_entry_points())
