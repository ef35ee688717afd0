"""Print the reference table of the `pruning:` keys (docs/pruning_options.md holds it):

    python -m dupru_basicsr.plugin.pruning_reference
"""
from dupru_basicsr.plugin.pruning_options import reference_table

if __name__ == '__main__':
    print(reference_table(), end='')
