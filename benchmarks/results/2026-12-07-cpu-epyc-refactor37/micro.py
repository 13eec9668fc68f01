"""Adaptive tokenize (3 crops, batch 1 and 8) of the bundled model: median ms over 60 calls."""
import statistics, sys, time
import torch
from comit import COMiT
from comit.data import build_dataset
torch.set_num_threads(1)
model = COMiT.from_pretrained("bundled").eval()
data = build_dataset("shapes", model.config.image_size, split="val")
for batch in (1, 8):
    images = torch.stack([data[i]["image"] for i in range(batch)])
    model.tokenize(images, order="adaptive", num_crops=3, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(60):
        start = time.perf_counter()
        model.tokenize(images, order="adaptive", num_crops=3, generator=torch.Generator().manual_seed(0))
        times.append((time.perf_counter() - start) * 1000)
    print(sys.argv[1], batch, round(statistics.median(times), 2), round(min(times), 2))
