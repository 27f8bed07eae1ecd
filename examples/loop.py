"""A loop with a stop condition: binary search for a secret number.

The guesser sends guesses to the oracle, the oracle answers, and the loop ends
when the guess is right, or when no number is left to guess (the secret is not
in the range searched): a conditional edge stops feeding the guesser.

    python examples/loop.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import stepgraph as sg

SECRET = 37


@dataclass(frozen=True)
class Guess:
    low: int
    high: int

    @property
    def value(self) -> int:
        return (self.low + self.high) // 2


@dataclass(frozen=True)
class Verdict:
    guess: Guess
    answer: str  # "higher", "lower", "found" or "absent"


@sg.executor(id="guesser")
async def guesser(verdict: Verdict, ctx: sg.WorkflowContext[Guess]) -> None:
    g = verdict.guess
    if verdict.answer == "higher":
        await ctx.send_message(Guess(g.value + 1, g.high))
    else:
        await ctx.send_message(Guess(g.low, g.value - 1))


@sg.executor(id="oracle")
async def oracle(guess: Guess, ctx: sg.WorkflowContext[Verdict, str]) -> None:
    if guess.low > guess.high:  # nothing left between the bounds
        await ctx.yield_output("no number left to guess: the secret is outside the range")
        await ctx.send_message(Verdict(guess, "absent"))
        return
    value = guess.value
    answer = "found" if value == SECRET else "higher" if value < SECRET else "lower"
    await ctx.yield_output(f"guess {value}: {answer}")
    await ctx.send_message(Verdict(guess, answer))


def build() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=oracle, name="binary-search")
        .add_edge(oracle, guesser, condition=lambda verdict: verdict.answer in ("higher", "lower"))
        .add_edge(guesser, oracle)
        .build()
    )


if __name__ == "__main__":
    for line in asyncio.run(build().run(Guess(0, 100))).outputs:
        print(line)
