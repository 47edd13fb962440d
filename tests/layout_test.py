"""The package's shape: one home per concern, as README's Layout says."""

import pathlib
import re

import algdist
from algdist import envs

PACKAGE = pathlib.Path(algdist.__file__).parent


def _modules():
  return sorted(PACKAGE.rglob('*.py'))


def test_no_module_outgrows_one_concern():
  sizes = {
    str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
    for p in _modules()
  }
  big = {name: n for name, n in sizes.items() if n > 460}
  assert not big, f'split these modules: {big}'


def test_shared_code_has_no_env_name_branch():
  """Env-specific behaviour is a hook on the family, not `env == name`."""
  names = '|'.join(re.escape(n) for n in envs.names())
  branch = re.compile(rf"(==|!=|\bin)\s*\(?\s*'({names})'")
  found = [
    f'{p.relative_to(PACKAGE)}:{i}'
    for p in _modules()
    if 'envs' not in p.relative_to(PACKAGE).parts
    for i, line in enumerate(p.read_text().splitlines(), 1)
    # A `for` over names is a table of runs (bench.py), not a branch.
    if branch.search(line) and not line.lstrip().startswith('for ')
  ]
  assert not found, found


def test_episode_returns_and_the_glossary_each_have_one_home():
  defs = [
    str(p.relative_to(PACKAGE))
    for p in _modules()
    if re.search(r'^def episode_returns\(', p.read_text(), re.M)
  ]
  assert defs == ['rollout.py'], defs
  assert 'Shape letters' in algdist.__doc__
  stray = [
    str(p.relative_to(PACKAGE))
    for p in _modules()
    if re.search(r'^Letters:', p.read_text(), re.M)
  ]
  assert not stray, f'letters defined outside the glossary: {stray}'
