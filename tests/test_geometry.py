import pytest

from millivid.geometry import LevelGeometry, geometry_problem


def test_paper_token_geometry():
    assert LevelGeometry(64, 4, 4).tokens_per_level == (256, 64, 16, 4)
    assert LevelGeometry(256, 16, 4).tokens_per_level == (256, 64, 16, 4)


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("patch", [1, 2, 4, 8])
@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_tokens_for_every_valid_combination(size, patch, levels):
    problem = geometry_problem(size, patch, levels)
    valid = size % (2 ** (levels - 1) * patch) == 0
    assert (problem is None) == valid
    if valid:
        geometry = LevelGeometry(size, patch, levels)
        for level in range(levels):
            assert geometry.tokens(level) == (size // 2**level // patch) ** 2
            if level:
                assert geometry.tokens(level - 1) == 4 * geometry.tokens(level)
    else:
        with pytest.raises(ValueError):
            LevelGeometry(size, patch, levels)


@pytest.mark.parametrize("size,patch,levels", [(48, 4, 2), (64, 3, 1), (64, 0, 2), (64, 4, 0), (0, 4, 1)])
def test_invalid_combinations(size, patch, levels):
    assert geometry_problem(size, patch, levels)


def test_level_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        LevelGeometry(64, 4, 4).tokens(4)


@pytest.mark.parametrize("finest,levels,tokens", [(256, 4, (256, 64, 16, 4)), (64, 2, (64, 16)), (1, 1, (1,))])
def test_geometry_from_the_finest_token_count(finest, levels, tokens):
    assert LevelGeometry.from_finest_tokens(finest, levels).tokens_per_level == tokens


@pytest.mark.parametrize("finest,levels", [(100, 3), (36, 2), (16, 4), (0, 1), (-4, 1), (64, 0)])
def test_finest_token_counts_without_such_a_pyramid(finest, levels):
    with pytest.raises(ValueError, match=f"{finest} tokens are not an n x n grid"):
        LevelGeometry.from_finest_tokens(finest, levels)
