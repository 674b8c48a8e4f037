"""Does a model copy from its context? The scan-log probe behind BENCHMARKS.md's figures.

.venv/bin/python scripts/copy_probe.py MODEL_DIR
    held-out scan logs (the same random ids listed twice): mean NLL per token of the
    first and of the second listing; a model that copies pays almost nothing for the
    second.

.venv/bin/python scripts/copy_probe.py --pretrain SEQ BATCH STEPS [--copy-only]
    [--rope-theta T] [--chunk-digits]
    a side pre-training run from scratch on the demo corpus (or on scan logs only),
    printing the probe eight times along the way; nothing is saved.
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
    model.train()
    return first / n, second / n


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
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=PRETRAIN.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    order, cursor, start = torch.randperm(blocks.shape[0], generator=gen), 0, time.time()
    model.train()
    for step in range(steps):
        if cursor + batch_size > order.numel():
            order, cursor = torch.randperm(blocks.shape[0], generator=gen), 0
        batch = blocks[order[cursor : cursor + batch_size]]
        cursor += batch_size
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps=steps, warmup=20, peak=PRETRAIN.lr, floor=PRETRAIN.lr / 10)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, steps // 8) == 0:
            a, b = probe(model, lambda t: tok.encode(t).ids)
            print(
                f"step {step + 1} loss {loss.item():.3f} scan log nll first {a:.2f} "
                f"second {b:.2f} ({time.time() - start:.0f} s)",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--pretrain", nargs=3, type=int, metavar=("SEQ", "BATCH", "STEPS"))
    ap.add_argument("--copy-only", action="store_true")
    ap.add_argument("--rope-theta", type=float)
    ap.add_argument("--chunk-digits", action="store_true")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
