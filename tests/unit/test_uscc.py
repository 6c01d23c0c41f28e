import pytest

from gateway.uscc import check_character, uscc_problem

# 91350100M000100Y43 is the worked example of GB 32100-2015; the other is a real registration
VALID = ["91350100M000100Y43", "91110000600037341L"]


@pytest.mark.parametrize("code", VALID)
def test_valid_codes_pass(code):
    assert uscc_problem(code) is None
    assert check_character(code[:17]) == code[17]


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("91350100M000100Y44", "check character is '4', GB 32100 requires '3'"),
        ("91350100M000100Y4", "must be 18 characters, got 17"),
        ("91350100M000100YO3", "contains 'O'"),
        ("9135A100M000100Y43", "characters 3-8"),
        ("91350100m000100Y43", "contains 'm'"),
    ],
)
def test_invalid_codes_say_why(code, fragment):
    problem = uscc_problem(code)
    assert problem is not None
    assert fragment in problem
