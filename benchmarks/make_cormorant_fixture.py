"""Write tests/data/cormorant_reference.pt: reference Cormorant weights, ten QM9 molecules and
the reference's outputs for them (run once by hand; never in CI; needs the reference source).

The reference is risilab/cormorant at commit 6a4b637 (non-commercial license: it is only
imported from ``--reference-src``, never copied). Its QM9 model ``CormorantQM9`` is built
with its command-line defaults (4 CG levels, maxl 3, max_sh 3, 10 channels, charge power 2,
hard/soft cutoff 1.73 Å, soft width 0.2 Å, learnable cutoffs, basis (3, 3), level gain 10,
'rand' init, one MPNN layer) in float64, seed 0. Its cutoffs and radial frequencies/phases
start at the same value for every channel, which would hide a permuted mapping: they are
perturbed by small random offsets before the run. Weights are rounded to float32 (to keep
the file under 1 MB) *before* the reference runs, so the stored weights are exactly the ones
that produced the stored outputs.

    python benchmarks/make_cormorant_fixture.py --reference-src /path/to/cormorant/src

The reference needs a few compatibility edits to run on current numpy/torch; see
docs/cormorant.md ("Running the reference").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import fusion  # noqa: F401  (torch loading flag before e3nn/mace)

ELEMENTS = (1, 6, 7, 8, 9)
REFERENCE_ARGS = {
    "maxl": [3], "max_sh": [3], "num_cg_levels": 4, "num_channels": [10], "num_species": 5,
    "cutoff_type": ["learn"], "hard_cut_rad": 1.73, "soft_cut_rad": 1.73,
    "soft_cut_width": 0.2, "weight_init": "rand", "level_gain": [10.0], "charge_power": 2,
    "basis_set": [3, 3], "charge_scale": 9, "gaussian_mask": False, "top": "linear",
    "input": "linear", "num_mpnn_layers": 1,
}


def reference_batch(z_list, pos_list, torch):
    """The reference's collated batch (padded; masks as its collate_fn makes them)."""
    B, A = len(z_list), max(len(z) for z in z_list)
    charges = torch.zeros(B, A, dtype=torch.long)
    positions = torch.zeros(B, A, 3, dtype=torch.float64)
    for b, (z, p) in enumerate(zip(z_list, pos_list)):
        charges[b, : len(z)] = torch.as_tensor(z)
        positions[b, : len(z)] = torch.as_tensor(p)
    species = torch.tensor(ELEMENTS)
    one_hot = charges.unsqueeze(-1) == species.view(1, 1, -1)
    atom_mask = charges > 0
    edge_mask = atom_mask.unsqueeze(1) * atom_mask.unsqueeze(2)
    return {"positions": positions, "charges": charges, "one_hot": one_hot,
            "atom_mask": atom_mask, "edge_mask": edge_mask}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-src", required=True,
                   help="directory holding the reference's 'cormorant' package (its src/)")
    p.add_argument("--cache-dir", default="resources")
    p.add_argument("--out", default="tests/data/cormorant_reference.pt")
    p.add_argument("--n-molecules", type=int, default=10)
    args = p.parse_args(argv)

    import torch

    from fusion.data.registry import get_dataset

    sys.path.insert(0, str(Path(args.reference_src).resolve()))
    from cormorant.models import CormorantQM9

    structures, splits = get_dataset("qm9-U0", cache_dir=args.cache_dir, n_train=100,
                                     n_val=10, n_test=10)
    idx = splits["train"][: args.n_molecules]
    z_list, pos_list = [], []
    for i in idx:
        a, b = int(structures.offsets[i]), int(structures.offsets[i + 1])
        z_list.append(np.asarray(structures.z[a:b], dtype=np.int64))
        pos_list.append(np.asarray(structures.pos[a:b], dtype=np.float64))

    torch.manual_seed(0)
    model = CormorantQM9(**REFERENCE_ARGS, device=torch.device("cpu"), dtype=torch.float64)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, param in model.named_parameters():
            if name.endswith(("scales", "phases")):
                param.add_(0.05 * torch.randn(param.shape, generator=g, dtype=param.dtype))
            elif name.endswith(("soft_cut_rad", "soft_cut_width")):
                param.mul_(1 + 0.1 * torch.rand(param.shape, generator=g, dtype=param.dtype))
            param.copy_(param.float().double())  # exactly representable in float32
    model.eval()
    batch = reference_batch(z_list, pos_list, torch)
    with torch.no_grad():
        prediction = model(batch)
    state = {k: v.detach().float().clone() for k, v in model.named_parameters()}
    fixture = {
        "reference": "risilab/cormorant@6a4b637 CormorantQM9",
        "reference_args": REFERENCE_ARGS,
        "elements": list(ELEMENTS),
        "state_dict": state,
        "z": [torch.as_tensor(z) for z in z_list],
        "positions": [torch.as_tensor(x) for x in pos_list],
        "qm9_split_index": [int(i) for i in idx],
        "prediction": prediction.detach().clone(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); reference outputs: "
          f"{prediction.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
