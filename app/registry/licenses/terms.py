"""The licence check: a described use against a licence's recorded terms, clause by clause.

Each clause reads one recorded term, so a licence entered through the API (not only Llama's) is checked by
the same rules. The verdict is the strictest clause outcome.
"""

from corral.registry.licenses.schemas import Clause, LicenseCheck, Obligation, UseDescription, Verdict
from corral.tables import License

_SEVERITY: dict[Verdict, int] = {"allowed": 0, "needs_permission": 1, "not_permitted": 2}


def check_use(license: License, use: UseDescription, *, multimodal: bool) -> LicenseCheck:
    clauses = [
        _commercial(license, use),
        _monthly_active_users(license, use),
        _outputs(license, use),
        _eu_multimodal(license, use, multimodal),
        _derivative_name(license, use),
    ]
    decided = [clause for clause in clauses if clause is not None]
    # Never empty: the commercial-use clause is always decided.
    verdict = max((clause.outcome for clause in decided), key=_SEVERITY.__getitem__)
    return LicenseCheck(
        license=license.slug,
        verdict=verdict,
        clauses=decided,
        obligations=_obligations(license, use),
        unverified_terms=list(license.unverified),
    )


def _commercial(license: License, use: UseDescription) -> Clause:
    if use.commercial and not license.commercial_use:
        return Clause(
            clause="commercial_use", outcome="not_permitted", explanation="This licence does not grant commercial use."
        )
    return Clause(
        clause="commercial_use",
        outcome="allowed",
        explanation="Commercial use is granted." if use.commercial else "Non-commercial use.",
    )


def _monthly_active_users(license: License, use: UseDescription) -> Clause | None:
    if license.mau_threshold is None:
        return None
    month = f" ({license.version_date.isoformat()})" if license.version_date else ""
    if use.monthly_active_users > license.mau_threshold:
        return Clause(
            clause="mau_threshold",
            outcome="needs_permission",
            explanation=(
                f"{use.monthly_active_users:,} monthly active users is over {license.mau_threshold:,} in the month "
                f"before the version release date{month}: request a licence from Meta, which Meta may grant or "
                "refuse in its sole discretion (Additional Commercial Terms)."
            ),
        )
    return Clause(
        clause="mau_threshold",
        outcome="allowed",
        explanation=f"At or under {license.mau_threshold:,} monthly active users.",
    )


def _outputs(license: License, use: UseDescription) -> Clause | None:
    if not use.outputs_train_other_models:
        return None
    if not license.outputs_may_improve_other_models:
        return Clause(
            clause="outputs_may_improve_other_models",
            outcome="not_permitted",
            explanation="Outputs (or results) may not be used to improve any other large language model, except "
            "this model family and its derivatives (section 1.b.v).",
        )
    return Clause(
        clause="outputs_may_improve_other_models",
        outcome="allowed",
        explanation="Outputs may be used to train or improve other models, under the naming rule.",
    )


def _eu_multimodal(license: License, use: UseDescription, multimodal: bool) -> Clause | None:
    if not (license.eu_multimodal_restriction and multimodal and use.eu_domiciled):
        return None
    if use.end_user_of_product:
        return Clause(
            clause="eu_multimodal_restriction",
            outcome="allowed",
            explanation="End users of a product or service that incorporates the model are exempt.",
        )
    return Clause(
        clause="eu_multimodal_restriction",
        outcome="not_permitted",
        explanation="The acceptable-use policy does not grant the section 1(a) rights for multimodal models to "
        "individuals domiciled in, or companies with a principal place of business in, the EU.",
    )


def _derivative_name(license: License, use: UseDescription) -> Clause | None:
    prefix = license.derivative_name_prefix
    if use.derivative_name is None or prefix is None:
        return None
    if use.derivative_name.startswith(prefix):
        return Clause(
            clause="derivative_name_prefix", outcome="allowed", explanation=f"The name begins with '{prefix}'."
        )
    return Clause(
        clause="derivative_name_prefix",
        outcome="not_permitted",
        explanation=f"A distributed derivative model must have '{prefix}' at the beginning of its name "
        f"(e.g. '{prefix} {use.derivative_name}').",
    )


def _obligations(license: License, use: UseDescription) -> list[Obligation]:
    obligations = []
    distributing = use.redistributes or use.derivative_name is not None
    if distributing:
        obligations.append(
            Obligation(obligation="license_copy", requirement="Give recipients a copy of the licence agreement.")
        )
        if license.notice_text:
            obligations.append(
                Obligation(
                    obligation="notice_file", requirement=f'Ship a "Notice" text file containing: {license.notice_text}'
                )
            )
        if license.attribution_text:
            obligations.append(
                Obligation(
                    obligation="attribution",
                    requirement=f'Display "{license.attribution_text}" prominently on a related website, user '
                    "interface, blog post, about page or product documentation.",
                )
            )
    names_a_model = use.derivative_name is not None or (
        use.outputs_train_other_models and license.outputs_may_improve_other_models
    )
    if names_a_model and license.derivative_name_prefix:
        obligations.append(
            Obligation(
                obligation="name_prefix",
                requirement=f"Begin the name of any AI model you distribute that is built on, or trained on outputs "
                f"of, this model with '{license.derivative_name_prefix}'.",
            )
        )
    if license.acceptable_use_policy_url:
        obligations.append(
            Obligation(
                obligation="acceptable_use_policy", requirement=f"Comply with {license.acceptable_use_policy_url}."
            )
        )
    return obligations
