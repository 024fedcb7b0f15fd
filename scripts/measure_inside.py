"""The numbers of docs/walkthrough.md's section 11, measured on a trained model (default:
runs/shakespeare_char, the default run): which heads matter most when ablated, what they do
(previous-token and induction scores), and from which layer the logit lens predicts the next
character.

python scripts/measure_inside.py [--checkpoint runs/shakespeare_char] [--batches 8]
"""

import argparse

import numpy as np
import torch

from minitransformer import load_model
from minitransformer.activations import ablation_losses, logit_lens
from minitransformer.inspection import capture_attention, head_scores
from minitransformer.training.data import get_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/shakespeare_char")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    model, tokenizer = load_model(args.checkpoint)
    meta_dtype = "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"
    val = np.memmap(f"{args.checkpoint}/data/val.bin", dtype=meta_dtype, mode="r")
    generator = torch.Generator().manual_seed(0)
    T = model.config.block_size
    pairs = [get_batch(val, 8, T, generator, torch.device("cpu")) for _ in range(args.batches)]
    x, y = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    base, losses = ablation_losses(model, x, y)
    rises = losses - base
    print(f"validation loss {base:.4f} on {len(x)} windows of {T}; rise when one head is ablated (zero):")
    order = sorted(((rises[l, h].item(), l, h) for l in range(rises.shape[0]) for h in range(rises.shape[1])), reverse=True)
    for rise, layer, head in order:
        print(f"  head {layer}.{head}: {rise:+.4f}")

    # Previous-token and induction scores on a random sequence repeated twice.
    period = T // 2
    random_tokens = torch.randint(0, tokenizer.vocab_size, (1, period), generator=generator)
    with capture_attention(model) as maps, torch.no_grad():
        model(torch.cat([random_tokens, random_tokens], dim=1))
    previous, induction = head_scores(maps, period)
    print("previous-token / induction score of each head (rows: layers):")
    for layer in range(previous.shape[0]):
        print("  " + "  ".join(f"{p:.2f}/{i:.2f}" for p, i in zip(previous[layer].tolist(), induction[layer].tolist())))

    lens = logit_lens(model, x[:16])  # (L + 1, 16, T, V)
    probs = torch.softmax(lens.float(), dim=-1)
    truth = y[:16]
    print("logit lens on 16 windows: top-1 accuracy and mean probability of the actual next character")
    for layer in range(lens.shape[0]):
        accuracy = (lens[layer].argmax(-1) == truth).float().mean().item()
        p_next = probs[layer].gather(-1, truth[..., None]).mean().item()
        name = "embeddings" if layer == 0 else f"after layer {layer - 1}"
        print(f"  {name:>16}: {accuracy:6.1%}  {p_next:.3f}")


if __name__ == "__main__":
    main()
