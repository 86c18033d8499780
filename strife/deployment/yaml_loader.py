"""A strict YAML loader for topologies.

PyYAML silently keeps the last of two equal keys and turns 1000.50 into a float; both
would hide mistakes in a file that holds money, so duplicates are errors and decimal
scalars stay text for the money parser to judge.
"""
import yaml


class DuplicateKey(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey("while reading a mapping", node.start_mark,
                                   f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _float_as_text(loader, node):
    return loader.construct_scalar(node)


StrictLoader.add_constructor("tag:yaml.org,2002:float", _float_as_text)


def load(text):
    return yaml.load(text, Loader=StrictLoader)
