"""What ``scripts/run_lava.py`` prints from a run report (the dict ``lava_runtime.run_file``
returns and ``--json`` writes), as lines: the command line prints them, ``analysis.report``
puts a committed report into docs/lava.md."""


def agreement_line(a, qualifier=''):
    """One line on the agreement report ``a`` (predictions, logits, every layer's spikes)."""
    spikes = 'identical' if a['spikes_equal_all_layers'] else 'DIFFERENT: ' + ', '.join(a['layers_differing'])
    return (f'agreement with training-side fixed-point inference{qualifier}: predictions '
            f'{a["predictions"] * 100:.1f}%, logits {"identical" if a["logits_equal"] else "DIFFERENT"}, '
            f'spikes of every layer at every step {spikes}')


def format_run_report(r, labels=None) -> list:
    """The lines ``run_lava.py`` prints for its report ``r`` (the dict ``run_file`` returns and
    ``--json`` writes): accuracy, agreement, per-layer operations, gating, wall time, memory.
    ``labels``: the runs to show (default: those in ``r``, gated before ungated)."""
    labels = labels or [lab for lab in ('gated', 'ungated') if f'synops_{lab}' in r]
    out = []
    out.append(f'model {r["model"]}  ({r["processes"]} Lava processes)')
    out.append(f'accuracy on {r["num_samples"]} {r["dataset"]} test samples: {r["accuracy"]:.4f}')
    a = r['agreement']
    if a is not None:
        out.append(agreement_line(a))
    elif r.get('imported_from_nir'):
        out.append('agreement: n/a (imported from NIR: no training-side model here; docs/nir.md compares '
                   'it with its source framework)')
    else:
        out.append('agreement: n/a (stock NetX file: no training-side model)')
    head = f'{"layer":22s} {"steps":>5s} {"spikes":>8s}'
    for lab in labels:
        head += f' {"synops " + lab:>16s} {"updates " + lab:>17s}'
    out.append('')
    out.append(head)
    for name, e in r['layers'].items():
        line = f'{name:22s} {e["active_steps"]:5d} {e["spikes"]:8d}'
        for lab in labels:
            line += f' {e["synops_" + lab]:16d} {e["neuron_updates_" + lab]:17d}'
        out.append(line)
    line = f'{"total":22s} {"":5s} {"":8s}'
    for lab in labels:
        line += f' {r["synops_" + lab]:16d} {r["neuron_updates_" + lab]:17d}'
    out.append(line)
    if 'gated' in labels and 'ungated' in labels:
        out.append(f'gating: synaptic operations x{r["synops_gated"] / max(1, r["synops_ungated"]):.3f}, '
                   f'neuron updates x{r["neuron_updates_gated"] / max(1, r["neuron_updates_ungated"]):.3f} '
                   f'of ungated; output spikes {"changed (BUG)" if r["gating_changes_output"] else "unchanged"}')
    for lab in labels:
        out.append(f'wall time {lab}: {r["wall_s_" + lab]:.2f} s ({r["samples_per_s_" + lab]:.1f} samples/s; '
                   f'start-up {r["startup_s_" + lab]:.2f} s)')
    m = r['memory_mb']
    out.append(f'batch {r["batch"]} ({r["lava_steps"]} Lava steps); estimated memory {m["total"]:.1f} MB '
          f'(frames {m["frames"]:.1f}, weights {m["weights"]:.1f}, states {m["states"]:.1f}, channels {m["channels"]:.1f}, '
          f'records {m["records"]:.1f}, workspace {m["workspace"]:.1f}; interpreters not included)')
    return out
