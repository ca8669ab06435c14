"""A small LaTeX math checker: balanced braces and environments, \\left/\\right pairs, known commands.

It does not typeset; it catches what breaks KaTeX or MathJax most often in hand-written formulas.
"""

from __future__ import annotations

import re

KNOWN_COMMANDS = set("""
alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi pi varpi rho
varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi
Psi Omega
frac dfrac tfrac sqrt sum prod int oint lim limsup liminf max min arg argmax argmin sup inf exp log ln det
dim ker Pr sin cos tan tanh sinh cosh sigmoid
mathrm mathbf mathit mathcal mathbb mathsf mathtt mathfrak boldsymbol bm text textrm textbf textit operatorname
hat widehat tilde widetilde bar overline underline vec dot ddot check breve acute grave mathring
overbrace underbrace overset underset stackrel
left right big Big bigg Bigg bigl bigr Bigl Bigr biggl biggr Biggl Biggr middle
cdot cdots ldots dots vdots ddots times div pm mp ast star circ bullet odot oplus otimes ominus oslash
leq le geq ge neq ne approx sim simeq equiv propto ll gg subset subseteq supset supseteq in notin ni cup cap
setminus emptyset varnothing forall exists nabla partial infty to mapsto rightarrow leftarrow Rightarrow
Leftarrow leftrightarrow Leftrightarrow longrightarrow longmapsto gets uparrow downarrow
mid parallel perp top bot vert Vert lvert rvert lVert rVert langle rangle lceil rceil lfloor rfloor
quad qquad enspace thinspace negthinspace
begin end
displaystyle textstyle scriptstyle
prime ell hbar imath jmath wp Re Im aleph
land lor lnot neg wedge vee
colon coloneqq triangleq doteq
odot bigodot bigoplus bigotimes bigcup bigcap
sum_ mathop limits nolimits
tag notag nonumber label
hline
phantom
""".split())
KNOWN_ENVIRONMENTS = {"aligned", "align", "align*", "gathered", "cases", "matrix", "pmatrix", "bmatrix",
                      "vmatrix", "Vmatrix", "array", "split", "smallmatrix", "equation", "equation*"}

_COMMAND = re.compile(r"\\([A-Za-z]+)|\\(.)")


def check_math(src: str) -> list[str]:
    """Return a list of problems; empty when the formula looks well formed."""
    problems: list[str] = []
    depth = 0
    i = 0
    while i < len(src):
        ch = src[i]
        if ch == "\\" and i + 1 < len(src):
            i += 2 if not src[i + 1].isalpha() else 1
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                problems.append(f"unbalanced '}}' at offset {i}")
                depth = 0
        i += 1
    if depth > 0:
        problems.append(f"{depth} unclosed '{{'")
    unknown = sorted({m.group(1) for m in _COMMAND.finditer(src) if m.group(1) and m.group(1) not in KNOWN_COMMANDS})
    if unknown:
        problems.append("unknown command(s): " + ", ".join("\\" + u for u in unknown))
    lefts = len(re.findall(r"\\left(?![a-zA-Z])", src))
    rights = len(re.findall(r"\\right(?![a-zA-Z])", src))
    if lefts != rights:
        problems.append(f"\\left and \\right do not pair ({lefts} vs {rights})")
    stack: list[str] = []
    for m in re.finditer(r"\\(begin|end)\{([^}]*)\}", src):
        kind, env = m.groups()
        if env not in KNOWN_ENVIRONMENTS:
            problems.append(f"unknown environment '{env}'")
        if kind == "begin":
            stack.append(env)
        elif not stack or stack.pop() != env:
            problems.append(f"\\end{{{env}}} without matching \\begin")
    if stack:
        problems.append("unclosed environment(s): " + ", ".join(stack))
    if "$" in src:
        problems.append("the formula must not contain $ delimiters (it is display math already)")
    return problems
