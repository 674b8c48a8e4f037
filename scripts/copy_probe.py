"""Does a model copy from its context? The scan-log probe behind BENCHMARKS.md's figures.

.venv/bin/python scripts/copy_probe.py MODEL_DIR
    held-out scan logs (the same random ids listed twice): mean NLL per token of the
    first and of the second listing; a model that copies pays almost nothing for the
    second. Also the mean NLL per token of 300 held-out corpus documents (another seed).

.venv/bin/python scripts/copy_probe.py --pretrain SEQ BATCH STEPS [--copy-only]
    [--rope-theta T] [--chunk-digits] [--warmup KIND N]
    a side pre-training run from scratch on the demo corpus (or on scan logs only),
    printing the probe eight times along the way; nothing is saved. --warmup first
    trains N steps of 2,048 tokens on a copying task, printing the probe every 50:
      fixed     32 random ids, then the same 32 again (a fixed offset of 32)
      periodic  12-64 random ids repeated to fill 128 (the offset varies by row)
      paste     128 corpus tokens with one 8-40 token span pasted again further on
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import training.tokenizer_build as tb
from training.demo_model import MODEL_CONFIG, PRETRAIN
from training.demo_pretrain import _lr_at, pack
from training.synthetic import chat_corpus, pretraining_corpus, tokenizer_glossary
from training.synthetic_corpus import _scan_log


def probe(model: torch.nn.Module, encode, n: int = 40) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    rng = random.Random(99)
    first = second = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            doc = _scan_log(rng)
            n1 = len(encode(doc.split("\n")[0]))
            ids = torch.tensor([encode(doc)])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            nll = -logp.gather(1, ids[0, 1:, None])[:, 0]
            first += nll[: n1 - 1].mean().item()
            # Skip the second line's header ("Scan log <place> <dock>: ").
            second += nll[n1 + 4 :].mean().item()
    model.train(was_training)
    return first / n, second / n


WARMUPS = ("fixed", "periodic", "paste")


def warmup_batch(kind: str, gen: torch.Generator, blocks: torch.Tensor, vocab: int) -> torch.Tensor:
    """16-32 rows, 2,048 tokens, of one copying task (see the module docstring)."""
    def rand(n: int) -> torch.Tensor:
        return torch.randint(len(tb.SPECIAL_TOKENS), vocab, (n,), generator=gen)

    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    if kind == "fixed":
        half = torch.stack([rand(32) for _ in range(32)])
        return torch.cat([half, half], dim=1)
    rows = []
    for _ in range(16):
        if kind == "periodic":
            rows.append(rand(randint(12, 65)).repeat(11)[:128])
            continue
        r, o = randint(0, blocks.shape[0]), randint(0, blocks.shape[1] - 128)
        w = blocks[r, o : o + 128].clone()
        span = randint(8, 41)
        a = randint(0, 128 - 2 * span)
        b = randint(a + span, 128 - span + 1)
        w[b : b + span] = w[a : a + span]
        rows.append(w)
    return torch.stack(rows)


def pretrain_run(args: argparse.Namespace) -> None:
    seq, batch_size, steps = args.pretrain
    if args.chunk_digits:  # Llama 3's own pattern: up to three digits per piece
        tb.SPLIT_PATTERN = tb.SPLIT_PATTERN.replace(r"|\p{N}", r"|\p{N}{1,3}")
    torch.set_num_threads(2)
    docs = pretraining_corpus(PRETRAIN.corpus_docs, seed=0)
    chats = [tb.render_chat(m) for m in chat_corpus(PRETRAIN.chat_docs, seed=0)]
    docs += tokenizer_glossary() * (PRETRAIN.corpus_docs // 200)
    tok = tb.train_tokenizer(docs + chats, vocab_size=MODEL_CONFIG["vocab_size"])
    ids = tb.special_ids(tok)
    if args.copy_only:
        rng = random.Random(7)
        docs, chats = [_scan_log(rng) for _ in range(30000)], []
    streams = [[*e.ids, ids[tb.END_OF_TEXT]] for e in tok.encode_batch(docs)]
    streams += [e.ids for e in tok.encode_batch(chats, add_special_tokens=False)]
    blocks = pack(streams, seq_len=seq, seed=0)
    config = {**MODEL_CONFIG, "bos_token_id": ids[tb.BOS], "eos_token_id": ids[tb.EOT]}
    if args.rope_theta:
        config["rope_theta"] = args.rope_theta
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config))  # type: ignore[no-untyped-call]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": PRETRAIN.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=PRETRAIN.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    start = time.time()

    def encode(text: str) -> list[int]:
        return list(tok.encode(text).ids)

    def train_step(batch: torch.Tensor, lr: float) -> float:
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def report(label: str, loss: float) -> None:
        a, b = probe(model, encode)
        print(
            f"{label} loss {loss:.3f} scan log nll first {a:.2f} second {b:.2f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )

    model.train()
    if args.warmup:
        kind, n = args.warmup[0], int(args.warmup[1])
        for step in range(n):
            batch = warmup_batch(kind, gen, blocks, tok.get_vocab_size())
            # The build's warm-up, then the peak rate (floor = peak: no decay).
            lr = _lr_at(step, steps=n, warmup=PRETRAIN.warmup, peak=PRETRAIN.lr, floor=PRETRAIN.lr)
            loss = train_step(batch, lr)
            if (step + 1) % 50 == 0:
                report(f"warm-up {kind} step {step + 1}", loss)
    order, cursor = torch.randperm(blocks.shape[0], generator=gen), 0
    for step in range(steps):
        if cursor + batch_size > order.numel():
            order, cursor = torch.randperm(blocks.shape[0], generator=gen), 0
        batch = blocks[order[cursor : cursor + batch_size]]
        cursor += batch_size
        lr = _lr_at(
            step, steps=steps, warmup=PRETRAIN.warmup, peak=PRETRAIN.lr, floor=PRETRAIN.lr / 10
        )
        loss = train_step(batch, lr)
        if (step + 1) % max(1, steps // 8) == 0:
            report(f"step {step + 1}", loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--pretrain", nargs=3, type=int, metavar=("SEQ", "BATCH", "STEPS"))
    ap.add_argument("--copy-only", action="store_true")
    ap.add_argument("--rope-theta", type=float)
    ap.add_argument("--chunk-digits", action="store_true")
    ap.add_argument("--warmup", nargs=2, metavar=("KIND", "N"))
    args = ap.parse_args()
    if args.warmup and (args.warmup[0] not in WARMUPS or not args.warmup[1].isdigit()):
        ap.error(f"--warmup KIND N: KIND is one of {', '.join(WARMUPS)}, N a step count")
    if args.pretrain:
        pretrain_run(args)
        return
    if not args.model_dir:
        ap.error("give MODEL_DIR or --pretrain")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    a, b = probe(model, lambda t: tok(t).input_ids)
    print(f"scan log nll per token: first listing {a:.3f}, second listing {b:.3f}")
    total = count = 0.0
    with torch.no_grad():
        for doc in pretraining_corpus(300, seed=12345):
            ids = torch.tensor([tok(doc).input_ids])
            total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    print(f"held-out corpus nll per token: {total / count:.3f}")


if __name__ == "__main__":
    main()
