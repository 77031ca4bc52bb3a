"""`python -m initstate`: the main job, the initial-carry strategy study (`--help` for options)."""

from initstate.studies.carry_strategies import main

if __name__ == '__main__':
  main()
