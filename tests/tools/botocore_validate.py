"""Validates request JSON files against botocore's own service models.

Usage: botocore_validate.py SERVICE OPERATION FILE [SERVICE OPERATION FILE ...]

Each FILE is checked as the input of SERVICE's OPERATION (e.g. appmesh CreateRoute), the
way the AWS CLI checks --cli-input-json before sending anything. Prints one line per file
and exits 1 if any file is invalid.
"""

import json
import sys

import botocore.session
from botocore.validate import ParamValidator


def main(argv):
    if len(argv) % 3 != 0 or not argv:
        print(__doc__, file=sys.stderr)
        return 2
    session = botocore.session.get_session()
    validator = ParamValidator()
    failed = 0
    for i in range(0, len(argv), 3):
        service, operation, path = argv[i : i + 3]
        model = session.get_service_model(service)
        shape = model.operation_model(operation).input_shape
        with open(path, encoding="utf-8") as f:
            params = json.load(f)
        report = validator.validate(params, shape)
        if report.has_errors():
            failed += 1
            print(f"INVALID {path} ({service} {operation}):\n{report.generate_report()}")
        else:
            print(f"valid   {path} ({service} {operation})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
