"""The command line: flags -> config -> stages.

  python -m algdist.main --config configs/dark_room.py[:PRESET] \
      [--workdir DIR] [--mode all|generate|train|eval|report]
      [--config.FIELD=VALUE ...]

`--mode all` runs the stages in order, skipping a finished stage and resuming
an interrupted one. Stages: generate (learning histories), train (AD and ED
transformers), eval (in-context rollouts and baselines -> eval/results.json),
report (plots and a markdown summary).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from algdist import evaluate, files, histories, report, train

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config: configs/<env>.py[:preset].',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Where the run lives; default runs/<config>[-<preset>].'
)
STAGES = ('generate', 'train', 'eval', 'report')
_MODE = flags.DEFINE_enum(
  'mode',
  'all',
  ('all',) + STAGES,
  'Which stage to run; all runs every stage in order.',
)


def default_workdir(config_path: str, preset: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join(
    'runs', name if preset == 'default' else f'{name}-{preset}'
  )


# Sections whose change makes a workdir's histories or checkpoints stale.
# 'evaluation' may change freely (eval runs again); 'sharding' too (orbax
# restores a checkpoint into any layout).
_FIXED_SECTIONS = (
  'preset',
  'env',
  'source',
  'histories',
  'model',
  'data',
  'train',
  'ed',
)


def _flatten(tree, prefix=''):
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f'{prefix}.{key}' if prefix else key))
  return out


def config_changes(config, workdir: str) -> dict[str, tuple]:
  """Fields whose value differs from the workdir's config.json: old, new."""
  saved = files.read_json(os.path.join(workdir, 'config.json'))
  if saved is None:
    return {}
  old = _flatten(saved)
  new = _flatten(json.loads(config.to_json_best_effort()))
  return {
    k: (old.get(k), new.get(k))
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k)
  }


def check_workdir(config, workdir: str) -> dict[str, tuple]:
  """Refuses a workdir made with another config; returns the changes.

  Only changes to sections that later stages may rerun are allowed.
  """
  changes = config_changes(config, workdir)
  fixed = {
    k: v for k, v in changes.items() if k.split('.')[0] in _FIXED_SECTIONS
  }
  if fixed:
    lines = '\n'.join(
      f'  {k}: {old!r} -> {new!r}' for k, (old, new) in fixed.items()
    )
    raise ValueError(
      f'{workdir} holds a run of another configuration:\n{lines}\n'
      'Use another --workdir for this one, or delete that workdir.'
    )
  return changes


def write_config(config, workdir: str) -> None:
  """Records the resolved config in the workdir (WORKDIR/config.json)."""
  os.makedirs(workdir, exist_ok=True)
  files.write_text(
    os.path.join(workdir, 'config.json'),
    config.to_json_best_effort(indent=1, sort_keys=True),
  )


def record_seconds(workdir: str, stage: str, seconds: float, add: bool):
  """Sets (or adds to) a stage's wall time in WORKDIR/seconds.json, which
  results.json reports."""
  path = os.path.join(workdir, 'seconds.json')
  table = files.read_json(path, default={})
  table[stage] = seconds + (table.get(stage, 0.0) if add else 0.0)
  files.write_json(path, table)


def run(config, workdir: str, mode: str = 'all') -> None:
  """Runs `mode` (one stage, or all of them) of the experiment in `workdir`."""
  changes = check_workdir(config, workdir)
  results = os.path.join(workdir, 'eval', 'results.json')
  # Evaluation is the one stage with no resume of its own: skip it when its
  # results exist for exactly this config.
  eval_done = os.path.exists(results) and not changes
  write_config(config, workdir)
  stages = STAGES if mode == 'all' else (mode,)
  if 'generate' in stages:
    manifest = histories.generate_and_report(config, workdir)
    # The manifest counts generation time across resumes itself.
    record_seconds(workdir, 'generate', manifest['seconds'], add=False)
    logging.info(
      'Histories: %d x %d steps in %s/histories.',
      manifest['num_histories'],
      manifest['steps_per_history'],
      workdir,
    )
    curve = files.read_json(
      os.path.join(workdir, 'histories', 'learning_curve.json')
    )
    print(
      f'source {manifest["algorithm"]} on {manifest["env"]}: '
      f'{manifest["num_histories"]} histories, first episode '
      f'{curve["mean_first_episode"]:.3f}, last 10 episodes '
      f'{curve["mean_last_10_episodes"]:.3f}'
      + (' of optimal' if curve['normalized'] else '')
      + (
        f', {curve["fraction_of_histories_reaching_90pct"]:.1%} of '
        'histories >= 90% of optimal'
        if 'fraction_of_histories_reaching_90pct' in curve
        else ''
      )
    )

  if 'train' in stages:
    for method in config.train.methods:
      start = time.perf_counter()
      summary = train.train_and_evaluate(config, workdir, method)
      if summary['updates_run']:
        seconds = time.perf_counter() - start
        record_seconds(workdir, 'train', seconds, add=True)
      eval_done = eval_done and summary['updates_run'] == 0
      print(
        f'{method}: {summary["step"]} updates, {summary["num_params"]:,} '
        f'parameters, loss {summary.get("loss", float("nan")):.3f}, held-out '
        f'accuracy {summary.get("val_accuracy", float("nan")):.3f} (best '
        'constant action '
        f'{summary.get("val_constant_action_accuracy", float("nan")):.3f})'
      )
    report.training_curves(workdir, config.train.methods)

  if 'eval' in stages and (mode == 'eval' or not eval_done):
    evaluate.evaluate(config, workdir)
  if 'report' in stages:
    written = report.write_report(workdir)
    with open(written['summary']) as f:
      print(f.read())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an override of a field the config lacks said
  in one line (ml_collections raises it from deep inside, a traceback)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}\n{_HELP}')
  except (KeyError, AttributeError) as e:
    text = str(e).replace('\\n', '\n').replace("\\'", "'")
    names = re.findall(r"'(\w+)'", text)
    hint = re.search(r'Did you mean "(\w+)" instead', text)
    name = names[0] if names else '?'
    culprit = next(
      (
        a.split('=')[0]
        for a in argv
        if a.startswith('--config.') and f'.{name}' in a.split('=')[0]
      ),
      f'--config...{name}',
    )
    sys.exit(
      f"FATAL Flags parsing error: {culprit}: the config has no field '{name}'"
      + (f'; did you mean "{hint.group(1)}"?' if hint else '.')
      + '\nFields and their comments: the config file under configs/ (a '
      f"learner's settings: its Config in algdist/agents/).\n{_HELP}"
    )


_HELP = 'Pass --helpshort or --helpfull to see help on flags.'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Progress bars and the summary say what happens; orbax and the loader
    # log every save at INFO. --verbosity=0 brings the log back.
    absl_logging.set_verbosity(absl_logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(
    flags.FLAGS['config'].config_filename, config.preset
  )
  run(config, workdir, _MODE.value)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=parse_flags)
