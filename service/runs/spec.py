"""What ``GET /techniques/{slug}/implementation`` shows: computed in a run worker (it needs torch)."""

from __future__ import annotations

import inspect
import math
from typing import Any

from ..mechanisms import runtime
from ..mechanisms.base import Mechanism


def implementation_spec(mech: Mechanism) -> dict[str, Any]:
    params = mech.defaults()
    module_obj = inspect.getmodule(mech.build)
    example_inputs = {}
    for name, shape in mech.example_shapes.items():
        n = math.prod(shape)
        example_inputs[name] = {"shape": list(shape), "dtype": "float32",
                                "data": [round(math.sin(0.7 * i), 4) for i in range(n)]}
    return {
        "technique": mech.slug, "title": mech.title, "reference": mech.reference, "notes": mech.notes or None,
        "stochastic": mech.stochastic,
        "inputs": [{"name": i.name, "dims": list(i.dims), "rank": len(i.dims), "description": i.description,
                    "optional": i.optional, "dtypes": ["float32", "float64", "bfloat16", "float16"]}
                   for i in mech.inputs],
        "outputs": [{"name": o.name, "dims": list(o.dims), "description": o.description, "attention": o.attention}
                    for o in mech.outputs],
        "hyperparameters": [{"name": h.name, "type": h.kind, "default": h.default, "minimum": h.minimum,
                             "maximum": h.maximum, "choices": list(h.choices) if h.choices else None,
                             "description": h.description} for h in mech.hyperparams],
        "constraints": list(mech.constraints),
        "parameters": {"for_inputs": {k: list(v) for k, v in mech.example_shapes.items()}, "hyperparameters": params,
                       "shapes": runtime.parameter_shapes(mech, mech.example_shapes, params)},
        "example_request": {"method": "POST", "url": f"/techniques/{mech.slug}/run",
                            "json": {"inputs": example_inputs, "hyperparameters": params, "seed": 0}},
        "source": inspect.getsource(module_obj) if module_obj else None,
        "source_module": module_obj.__name__ if module_obj else None,
    }
