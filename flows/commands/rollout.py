"""`kiln deploy`, `kiln rollback`, `kiln status`."""

from __future__ import annotations

from typing import Annotated

import typer

from flows import wiring
from flows.commands import make_console
from flows.commands.options import StoreOption
from flows.rollout import LOCAL, TARGETS, RolloutResult, roll_back, roll_out, target_status
from flows.settings import Target, get_settings

console = make_console()

TargetOption = Annotated[
    Target | None,
    typer.Option("--target", help=f"Where to run it: {' or '.join(TARGETS)} [KILN_TARGET]."),
]


def _print_result(result: RolloutResult) -> None:
    verb = "rolled back to" if result.rolled_back else "deployed"
    console.print(f"{verb} [bold]{result.version}[/] on {result.target}", highlight=False)
    console.print(f"  image     {result.image}", highlight=False)
    if result.previous_version:
        console.print(
            f"  previous  {result.previous_version} ({result.previous_image})", highlight=False
        )
    console.print(f"  endpoint  {result.endpoint}", highlight=False)
    if result.target == LOCAL:
        console.print(
            f"try it:  curl -s -X POST {result.endpoint}/predict "
            "-H 'Content-Type: application/json' -d '{\"data\": [[5.1, 3.5, 1.4, 0.2]]}'",
            highlight=False,
            markup=False,
        )


def deploy(
    version: Annotated[str, typer.Argument(help="A stored version (id, unique prefix, latest).")],
    target: TargetOption = None,
    image: Annotated[
        str | None,
        typer.Option(help="Ship this image (registry/repo@sha256:...), not the recorded one."),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Roll a stored version out: wait until ready, smoke-test, roll back by itself on failure."""
    settings = get_settings().with_overrides(store=store, target=target)
    result = roll_out(wiring.open_store(settings), version, settings.target, settings, image=image)
    _print_result(result)


def rollback(target: TargetOption = None, store: StoreOption = None) -> None:
    """Ship the version that ran before the current one (recorded in the store)."""
    settings = get_settings().with_overrides(store=store, target=target)
    result = roll_back(wiring.open_store(settings), settings.target, settings)
    _print_result(result)


def status(store: StoreOption = None) -> None:
    """What runs where: recorded and live versions, with image digests, per target."""
    settings = get_settings().with_overrides(store=store)
    opened = wiring.open_store(settings)
    for target in TARGETS:
        state = target_status(opened, target, settings)
        console.print(f"[bold]{target}[/]", highlight=False)
        record = state.recorded
        if record is None:
            console.print("  recorded  nothing deployed", highlight=False)
        else:
            console.print(
                f"  recorded  {record.current} {record.image} ({record.updated})", highlight=False
            )
            if record.previous:
                console.print(
                    f"  previous  {record.previous} {record.previous_image}", highlight=False
                )
        if state.error:
            console.print(f"  live      unknown: {state.error}", highlight=False)
        elif not state.live:
            console.print("  live      nothing running", highlight=False)
        for line in state.live:
            console.print(f"  live      {line}", highlight=False)
