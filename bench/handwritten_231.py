"""The baseline of bench/overhead.py: the 2-3-1 network trained by a hand-written PyTorch loop.

Reads the same CSV, standardizes the two inputs, holds out the same 20 rows, and runs the same
8,000 Adam steps (1,000 epochs of 80 rows in batches of 10). Prints the loop's own seconds.
Run as a whole process, so its imports count just as tensorsmith's do.
"""

import sys
import time

import numpy as np
import torch
from torch import nn

path = sys.argv[1]
data = np.loadtxt(path, delimiter=",", skiprows=1)
rng = np.random.default_rng(0)
order = rng.permutation(len(data))
train = data[order[:80]]
x = torch.tensor(train[:, :2], dtype=torch.float32)
x = (x - x.mean(0)) / x.std(0)
y = torch.tensor(train[:, 2], dtype=torch.float32)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
loss_fn = nn.BCEWithLogitsLoss()

start = time.perf_counter()
for _epoch in range(1000):
    perm = torch.randperm(80)
    for i in range(0, 80, 10):
        idx = perm[i : i + 10]
        loss = loss_fn(model(x[idx]).squeeze(-1), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
loop = time.perf_counter() - start
print(f"loop_seconds {loop:.4f} final_loss {loss.item():.4f}")
