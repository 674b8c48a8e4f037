"""LLM-as-judge: scoring open-ended answers against a rubric through any OpenAI-compatible
chat endpoint (the gateway itself, vLLM, or a hosted API).

The judge gets the rubric, the question, the reference answer and the candidate, and
must reply with a JSON object ``{"score": 1..5, "reason": "..."}``. Replies that do not
parse, or whose score is out of range, count as failures and are reported, never
guessed. Greedy decoding (temperature 0) keeps the grades repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.progress import Progress

from training.errors import TrainingError
from training.metrics import parse_answer

JUDGE_SYSTEM = (
    "You grade answers strictly by the rubric you are given. Reply with only a JSON "
    'object: {"score": <integer 1-5>, "reason": "<one sentence>"}. 5 means the candidate '
    "fully satisfies the rubric, 1 that it does not at all."
)


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """Where the judge model lives and what it grades against."""

    url: str
    model: str
    rubric: str
    api_key: str | None = None
    timeout: float = 120.0

    @classmethod
    def from_rubric_file(
        cls, url: str, model: str, rubric_file: Path, *, api_key: str | None = None
    ) -> JudgeConfig:
        try:
            rubric = rubric_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TrainingError(f"cannot read the rubric {rubric_file}: {exc.strerror}") from None
        if not rubric:
            raise TrainingError(f"the rubric {rubric_file} is empty")
        return cls(url=url, model=model, rubric=rubric, api_key=api_key)


def judge_prompt(rubric: str, question: str, reference: str, candidate: str) -> str:
    return (
        f"## Rubric\n{rubric}\n\n## Question\n{question}\n\n## Reference answer\n{reference}"
        f"\n\n## Candidate answer\n{candidate}\n\nGrade the candidate answer."
    )


def parse_grade(text: str) -> tuple[int | None, str]:
    obj = parse_answer(text)
    if obj is None:
        return None, f"unparseable judge reply: {text[:120]!r}"
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 5:
        return None, f"judge score out of range: {score!r}"
    return round(score), str(obj.get("reason", ""))


def judge_answers(
    cfg: JudgeConfig,
    items: list[tuple[str, str, str]],
    *,
    transport: httpx.BaseTransport | None = None,
    progress: Progress | None = None,
    description: str = "judging",
) -> dict[str, Any]:
    """Grade (question, reference, candidate) triples; return the mean score and details."""
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    grades: list[dict[str, Any]] = []
    task = progress.add_task(description, total=len(items), info="") if progress else None
    with httpx.Client(
        base_url=cfg.url.rstrip("/"), headers=headers, timeout=cfg.timeout, transport=transport
    ) as client:
        for question, reference, candidate in items:
            body = {
                "model": cfg.model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": JUDGE_SYSTEM},
                    {
                        "role": "user",
                        "content": judge_prompt(cfg.rubric, question, reference, candidate),
                    },
                ],
            }
            try:
                resp = client.post("/v1/chat/completions", json=body)
            except httpx.HTTPError as exc:
                raise TrainingError(f"cannot reach the judge at {cfg.url}: {exc}") from exc
            if resp.status_code != 200:
                raise TrainingError(f"the judge answered {resp.status_code}: {resp.text[:300]}")
            try:
                text = resp.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise TrainingError(f"the judge's reply is not a chat completion: {exc}") from exc
            score, reason = parse_grade(text)
            grades.append({"score": score, "reason": reason})
            if progress is not None and task is not None:
                progress.update(task, advance=1)
    if progress is not None and task is not None:
        progress.remove_task(task)
    scored = [g["score"] for g in grades if g["score"] is not None]
    return {
        "judge_model": cfg.model,
        "n": len(grades),
        "failures": len(grades) - len(scored),
        "mean_score": round(sum(scored) / len(scored), 3) if scored else None,
        "grades": grades,
    }
