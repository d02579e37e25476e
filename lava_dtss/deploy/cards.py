"""Model cards: the small JSON beside a NetX file (``model.net`` -> ``model.json``)
that says how the model was made and what it needs to run.

A card written by training holds the test figures, the active steps, the
command and ``recipe_fingerprint`` (``lava_dtss.training.loop.recipe_fingerprint``);
``scripts/early_exit.py`` adds ``early_exit``: per policy the threshold chosen
on validation, with the budget and the split it was chosen on, which
``run_lava.py --exit-policy margin`` uses when no ``--exit-threshold`` is given.
"""
from __future__ import annotations

import json
import os

EXIT_HOW = ('choose one on validation with `python scripts/early_exit.py --models {model}` '
            '(it writes it into the card), or pass --exit-threshold N')


def card_path(model: str) -> str:
    """The card of the network file ``model``: the same name with ``.json``."""
    return os.path.splitext(model)[0] + '.json'


def read_card(model: str) -> dict | None:
    """The card of ``model`` (a dict), or None where it has none; ``ValueError``
    (one line) for a card that is not a JSON object."""
    path = card_path(model)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            card = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'model card {path}: not readable JSON ({e}); expected the card written with '
                         f'{os.path.basename(model)}') from None
    if not isinstance(card, dict):
        raise ValueError(f'model card {path}: expected a JSON object, got {type(card).__name__}')
    return card


def exit_entry(record: dict, policy: str, trained_val_size=None) -> dict | None:
    """What a card keeps of an early-exit study's ``record`` (``exit_study.model_exit_study``)
    for ``policy``: the chosen threshold, its validation budget and split, and its
    validation and test figures; None where no threshold was chosen.
    ``trained_val_size``: the ``--val-size`` the model was trained with (the card's),
    to say whether the split was held out of its training."""
    chosen = (record.get('policies', {}).get(policy) or {}).get('chosen')
    if not chosen:
        return None
    n = record['val_size']
    held = ('held out of its training' if trained_val_size == n else
            'images the model was TRAINED on (it was trained without --val-size): the threshold is optimistic; '
            f'train with --val-size {n} to hold them out' if trained_val_size == 0 else
            f'held out of training where the model was trained with --val-size {n}')
    return {'threshold': chosen['threshold'], 'budget_pp': record['budget_pp'],
            'chosen_on': f'the fixed validation split of {n} {record["dataset"]} training images ({held})',
            'val_accuracy': chosen['val_accuracy'], 'val_steps': chosen['val_steps']['exit'],
            'test_accuracy': chosen['test_accuracy'], 'test_steps': chosen['test_steps']['exit'],
            'full_window_test_accuracy': record['full_window']['test_accuracy']}


def record_exit_thresholds(model: str, record: dict, command: str) -> dict:
    """Write the thresholds ``record`` chose (every policy that has one) into the
    card of ``model`` (atomically), with the ``command`` that chose them; returns
    the card. ``ValueError`` where ``model`` has no card."""
    from ..training.checkpoints import write_json
    card = read_card(model)
    if card is None:
        raise ValueError(f'{model} has no model card ({card_path(model)}) to record its exit thresholds in')
    entries = {p: e for p in sorted(record.get('policies', {}))
               if (e := exit_entry(record, p, card.get('val_size'))) is not None}
    card['early_exit'] = {'policies': entries, 'command': command}
    write_json(card_path(model), card)
    return card


def card_exit_threshold(model: str, policy: str):
    """``(threshold, where)`` for ``policy`` from the card of ``model``: the
    threshold and one line saying where it came from; ``ValueError`` with what
    to do where the card has none."""
    card = read_card(model)
    how = EXIT_HOW.format(model=model)
    if card is None:
        raise ValueError(f'--exit-policy {policy} needs a threshold: {model} has no model card '
                         f'({card_path(model)}) to take one from; {how}')
    entry = (card.get('early_exit') or {}).get('policies', {}).get(policy)
    if not entry:
        raise ValueError(f'--exit-policy {policy} needs a threshold: the card {card_path(model)} holds none '
                         f'for {policy}; {how}')
    where = (f'the card {card_path(model)}: chosen on the {entry["chosen_on"]} for a budget of '
             f'{entry["budget_pp"]} pp (validation {100 * entry["val_accuracy"]:.2f}% at '
             f'{entry["val_steps"]:.2f} steps)')
    return entry['threshold'], where
