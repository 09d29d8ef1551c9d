"""The layout files of ../shared/layouts/: one parameter tensor a line, `name count`, with
`#` comments.  Shared by the Python tools (torch_topk_baseline.py, traffic_model.py)."""


def read_layout(path):
    """The tensors' element counts, in file order."""
    counts = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            counts.append(int(line.split()[1]))
    return counts
