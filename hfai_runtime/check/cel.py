"""The CRDs' ``x-kubernetes-validations`` rules, evaluated with the CEL library ``cel-python``.

The API server evaluates each rule with ``self`` bound to the value at the rule's place in the
schema, and refuses the object when a rule is false or cannot be evaluated
(apiextensions-apiserver ``pkg/apiserver/schema/cel/validation.go``@v0.36.2). On create there is
no old object, so *transition rules* (those that read ``oldSelf``, e.g. ``self == oldSelf``
immutability) are skipped there too ("transition rules are evaluated only if there is a
comparable existing value").

Kubernetes adds extension libraries to CEL (lists, regex, quantity, ...); the rules of the
shipped CRDs call none of them (only ``has``, ``size``, ``matches``, ``in``, ``filter``,
``exists``, ``all``, which are standard CEL). :func:`compile_rule` refuses a rule that calls a
function this environment lacks, so a CRD update that starts using an extension fails loudly
(in the tests, which compile every shipped rule) instead of being reported as a bad manifest.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy
import lark

from hfai_runtime.check.problem import Problem
from hfai_runtime.check.schema import walk

#: CEL macros: expanded by the parser, so not in ``celpy``'s function table.
MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
RULE_ID = "crd/x-kubernetes-validations"


class UnsupportedRule(ValueError):
    """A CRD rule needs a CEL function (a Kubernetes extension) that this checker does not have."""


@functools.cache
def _environment() -> celpy.Environment:
    return celpy.Environment()


@functools.cache
def compile_rule(rule: str) -> tuple[celpy.Runner, bool]:
    """The compiled program of ``rule`` and whether it is a transition rule (reads ``oldSelf``)."""
    env = _environment()
    ast = env.compile(rule)
    missing = called_functions(ast) - MACROS - set(celpy.evaluation.base_functions)
    if missing:
        raise UnsupportedRule(
            f"CEL rule {rule!r} calls functions this checker lacks: {', '.join(sorted(missing))}"
        )
    transition = any(token == "oldSelf" for token in _identifiers(ast))
    return env.program(ast), transition


def called_functions(ast: lark.Tree) -> set[str]:
    """The names of the functions and methods a compiled CEL expression calls."""
    names = set()
    for node in ast.iter_subtrees():
        if node.data == "ident_arg":  # f(args)
            names.add(str(node.children[0]))
        elif node.data == "member_dot_arg":  # target.f(args)
            names.add(str(node.children[1]))
    return names


def _identifiers(ast: lark.Tree) -> list[str]:
    return [
        str(token) for token in ast.scan_values(lambda v: isinstance(v, lark.Token) and v.type == "IDENT")
    ]


def check_rules(doc: dict, schema: dict) -> list[Problem]:
    """A problem for every ``x-kubernetes-validations`` rule that ``doc`` fails on create."""
    problems = []
    for value, node, path in walk(doc, schema):
        for rule in node.get("x-kubernetes-validations", ()):
            problem = _evaluate(rule, value, path)
            if problem is not None:
                problems.append(problem)
    return problems


def _evaluate(rule: dict, value: Any, path: str) -> Problem | None:
    """``None`` when ``rule`` holds for ``value`` (or is a transition rule), else the problem."""
    program, transition = compile_rule(rule["rule"])
    if transition:
        return None
    message = (rule.get("message") or "").strip() or f"failed rule: {rule['rule']}"
    try:
        result = program.evaluate({"self": celpy.json_to_cel(value)})
    except (celpy.CELEvalError, ValueError) as error:  # ValueError: beyond CEL's 64-bit ints
        return Problem(path, f"{error.args[0]} evaluating rule: {message}", RULE_ID)
    if isinstance(result, celpy.celtypes.BoolType) and result:
        return None
    return Problem(path, f"Invalid value: {message} (rule: {rule['rule']})", RULE_ID)
