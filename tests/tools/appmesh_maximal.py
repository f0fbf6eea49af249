"""Prints, for each App Mesh create operation this control plane serves, an input that
sets every member botocore's appmesh model has (one item per list, the first value of
each enum), as {"OPERATION": {...}} JSON. Unions get all their members, so what these
inputs test is whether every field is known (implemented or refused by name), not whether
they make a valid mesh.

Usage: appmesh_maximal.py OPERATION...
"""

import json
import sys

import botocore.session


def value_for(shape, stack):
    if shape.name in stack:
        return None
    stack = stack + [shape.name]
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            v = value_for(member, stack)
            if v is not None:
                out[name] = v
        return out
    if kind == "list":
        v = value_for(shape.member, stack)
        return [] if v is None else [v]
    if kind == "map":
        v = value_for(shape.value, stack)
        return {} if v is None else {"k": v}
    if kind == "string":
        if shape.enum:
            return shape.enum[0]
        return "x"
    if kind in ("integer", "long"):
        return int(shape.metadata.get("min", 1))
    if kind in ("double", "float"):
        return 1.0
    if kind == "boolean":
        return True
    return None


def main(argv):
    model = botocore.session.get_session().get_service_model("appmesh")
    out = {}
    for op in argv:
        out[op] = value_for(model.operation_model(op).input_shape, [])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
