"""The licence check's rule (app/registry/licenses/terms.py) clause by clause, on licences held in memory.

test_licenses.py checks the shipped Llama terms through the API; here every clause, its outcome and its exact
explanation, and every obligation are pinned, including terms no shipped licence has (no commercial use).
"""

from datetime import date

from corral.registry.licenses.schemas import UseDescription
from corral.registry.licenses.terms import check_use
from corral.tables import License

AUP = "https://www.llama.com/llama3_2/use-policy"


def licence(**terms: object) -> License:
    """Llama 3.2's recorded terms unless overridden; not stored: the check only reads them."""
    recorded: dict[str, object] = {
        "slug": "llama-3.2",
        "version_date": date(2024, 9, 25),
        "commercial_use": True,
        "mau_threshold": 700_000_000,
        "attribution_text": "Built with Llama",
        "derivative_name_prefix": "Llama",
        "outputs_may_improve_other_models": True,
        "eu_multimodal_restriction": True,
        "notice_text": "Llama 3.2 is licensed under the Llama 3.2 Community License.",
        "acceptable_use_policy_url": AUP,
        "unverified": ["notice_text"],
    }
    return License(**(recorded | terms))


def clauses(result: object) -> dict[str, tuple[str, str]]:
    return {clause.clause: (clause.outcome, clause.explanation) for clause in result.clauses}  # type: ignore[attr-defined]


def test_a_plain_commercial_use_is_allowed_with_no_obligation_but_the_policy() -> None:
    result = check_use(licence(), UseDescription(), multimodal=False)
    assert (result.license, result.verdict, result.unverified_terms) == ("llama-3.2", "allowed", ["notice_text"])
    assert clauses(result) == {
        "commercial_use": ("allowed", "Commercial use is granted."),
        "mau_threshold": ("allowed", "At or under 700,000,000 monthly active users."),
    }
    assert [(o.obligation, o.requirement) for o in result.obligations] == [
        ("acceptable_use_policy", f"Comply with {AUP}.")
    ]


def test_commercial_use_of_a_non_commercial_licence_is_not_permitted() -> None:
    terms = licence(commercial_use=False, mau_threshold=None)
    result = check_use(terms, UseDescription(commercial=True), multimodal=False)
    assert result.verdict == "not_permitted"
    assert clauses(result) == {"commercial_use": ("not_permitted", "This licence does not grant commercial use.")}
    research = check_use(terms, UseDescription(commercial=False), multimodal=False)
    assert (research.verdict, clauses(research)) == ("allowed", {"commercial_use": ("allowed", "Non-commercial use.")})


def test_monthly_active_users_over_the_threshold_need_meta_permission() -> None:
    over = check_use(licence(), UseDescription(monthly_active_users=700_000_001), multimodal=False)
    assert over.verdict == "needs_permission"
    assert clauses(over)["mau_threshold"] == (
        "needs_permission",
        "700,000,001 monthly active users is over 700,000,000 in the month before the version release date "
        "(2024-09-25): request a licence from Meta, which Meta may grant or refuse in its sole discretion "
        "(Additional Commercial Terms).",
    )
    undated = check_use(licence(version_date=None), UseDescription(monthly_active_users=10**9), multimodal=False)
    assert "release date: request" in clauses(undated)["mau_threshold"][1]
    at = check_use(licence(), UseDescription(monthly_active_users=700_000_000), multimodal=False)
    assert clauses(at)["mau_threshold"][0] == "allowed"


def test_training_other_models_on_outputs() -> None:
    allowed = check_use(licence(), UseDescription(outputs_train_other_models=True), multimodal=False)
    assert clauses(allowed)["outputs_may_improve_other_models"] == (
        "allowed",
        "Outputs may be used to train or improve other models, under the naming rule.",
    )
    assert [o.obligation for o in allowed.obligations] == ["name_prefix", "acceptable_use_policy"]
    assert allowed.obligations[0].requirement == (
        "Begin the name of any AI model you distribute that is built on, or trained on outputs of, this model "
        "with 'Llama'."
    )
    refused = check_use(
        licence(outputs_may_improve_other_models=False),
        UseDescription(outputs_train_other_models=True),
        multimodal=False,
    )
    assert refused.verdict == "not_permitted"
    assert clauses(refused)["outputs_may_improve_other_models"] == (
        "not_permitted",
        "Outputs (or results) may not be used to improve any other large language model, except this model "
        "family and its derivatives (section 1.b.v).",
    )
    assert [o.obligation for o in refused.obligations] == ["acceptable_use_policy"]


def test_eu_multimodal_restriction_applies_only_to_multimodal_models_in_the_eu() -> None:
    eu = UseDescription(eu_domiciled=True)
    refused = check_use(licence(), eu, multimodal=True)
    assert refused.verdict == "not_permitted"
    assert clauses(refused)["eu_multimodal_restriction"] == (
        "not_permitted",
        "The acceptable-use policy does not grant the section 1(a) rights for multimodal models to individuals "
        "domiciled in, or companies with a principal place of business in, the EU.",
    )
    end_user = check_use(licence(), UseDescription(eu_domiciled=True, end_user_of_product=True), multimodal=True)
    assert clauses(end_user)["eu_multimodal_restriction"] == (
        "allowed",
        "End users of a product or service that incorporates the model are exempt.",
    )
    for unaffected in (
        check_use(licence(), eu, multimodal=False),
        check_use(licence(), UseDescription(), multimodal=True),
        check_use(licence(eu_multimodal_restriction=False), eu, multimodal=True),
    ):
        assert "eu_multimodal_restriction" not in clauses(unaffected)
        assert unaffected.verdict == "allowed"


def test_derivative_names_and_distribution_obligations() -> None:
    named = check_use(licence(), UseDescription(derivative_name="Llama-Acme-8B"), multimodal=False)
    assert named.verdict == "allowed"
    assert clauses(named)["derivative_name_prefix"] == ("allowed", "The name begins with 'Llama'.")
    assert [(o.obligation, o.requirement) for o in named.obligations] == [
        ("license_copy", "Give recipients a copy of the licence agreement."),
        (
            "notice_file",
            'Ship a "Notice" text file containing: Llama 3.2 is licensed under the Llama 3.2 Community License.',
        ),
        (
            "attribution",
            'Display "Built with Llama" prominently on a related website, user interface, blog post, about page or '
            "product documentation.",
        ),
        (
            "name_prefix",
            "Begin the name of any AI model you distribute that is built on, or trained on outputs of, this model "
            "with 'Llama'.",
        ),
        ("acceptable_use_policy", f"Comply with {AUP}."),
    ]
    wrong = check_use(licence(), UseDescription(derivative_name="Acme-8B"), multimodal=False)
    assert wrong.verdict == "not_permitted"
    assert clauses(wrong)["derivative_name_prefix"] == (
        "not_permitted",
        "A distributed derivative model must have 'Llama' at the beginning of its name (e.g. 'Llama Acme-8B').",
    )
    bare = licence(derivative_name_prefix=None, notice_text=None, attribution_text=None, acceptable_use_policy_url=None)
    redistributed = check_use(bare, UseDescription(redistributes=True, derivative_name="Acme"), multimodal=False)
    assert "derivative_name_prefix" not in clauses(redistributed)
    assert [o.obligation for o in redistributed.obligations] == ["license_copy"]
    assert check_use(bare, UseDescription(), multimodal=False).obligations == []


def test_the_verdict_is_the_strictest_clause() -> None:
    use = UseDescription(monthly_active_users=10**9, derivative_name="Acme")
    assert check_use(licence(), use, multimodal=False).verdict == "not_permitted"
    only_permission = UseDescription(monthly_active_users=10**9, derivative_name="Llama-Acme")
    assert check_use(licence(), only_permission, multimodal=False).verdict == "needs_permission"
