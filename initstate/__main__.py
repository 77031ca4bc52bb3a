"""`python -m initstate`: the main job (for now, the built-in learned-carry demo)."""

from initstate.studies.demo import main

if __name__ == '__main__':
  main()
