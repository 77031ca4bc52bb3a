"""`python -m initstate`: the main job (for now, the built-in learned-carry demo)."""

from initstate._src.demo import main

if __name__ == '__main__':
  main()
