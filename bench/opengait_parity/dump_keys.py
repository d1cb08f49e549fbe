"""Record OpenGait's own state-dict key names and shapes for the configs we convert, as JSON: the file
tests/model/test_opengait.py checks our key table against.

    python dump_keys.py OPENGAIT_SRC OUT.json
"""

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opengait_loader import build, load_opengait

CASES = {
    "deepgaitv2-2d": ("deepgaitv2/DeepGaitV2_casiab.yaml", "2d"),
    "deepgaitv2-p3d": ("deepgaitv2/DeepGaitV2_casiab.yaml", "p3d"),
    "deepgaitv2-3d": ("deepgaitv2/DeepGaitV2_casiab.yaml", "3d"),
    "deepgaitv2-p3d-gait3d": ("deepgaitv2/DeepGaitV2_gait3d.yaml", "p3d"),
    "gaitbase": ("gaitbase/gaitbase_da_casiab.yaml", None),
}


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    opengait = load_opengait(src)
    record = {}
    for name, (config_file, mode) in CASES.items():
        cfg = yaml.safe_load((src / "configs" / config_file).read_text())
        if mode:
            cfg["model_cfg"]["Backbone"]["mode"] = mode
        net = build(opengait, cfg)
        record[name] = {"config": config_file, "mode": mode,
                        "keys": {k: list(v.shape) for k, v in net.state_dict().items()}}
    out.write_text(json.dumps(record, indent=0))
    print({k: len(v["keys"]) for k, v in record.items()})


if __name__ == "__main__":
    main()
