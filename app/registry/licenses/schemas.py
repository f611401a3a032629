import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue, StrictBool

from corral.fields import IsoDate, Name, Note, Slug, Url
from corral.schemas import Integer, NotNull, ReadModel, WriteModel

LicenseSort = Literal["slug", "-slug", "created_at", "-created_at"]
Verdict = Literal["allowed", "needs_permission", "not_permitted"]

_LICENSE_EXAMPLE: dict[str, JsonValue] = {
    "slug": "llama3.1",
    "name": "Llama 3.1 Community License Agreement",
    "version_date": "2024-07-23",
    "license_url": "https://github.com/meta-llama/llama-models/blob/main/models/llama3_1/LICENSE",
    "acceptable_use_policy_url": "https://llama.meta.com/llama3_1/use-policy",
    "hub_license_id": "llama3.1",
    "spdx_ref": "LicenseRef-scancode-llama-3.1-license-2024",
    "commercial_use": True,
    "mau_threshold": 700000000,
    "attribution_text": "Built with Llama",
    "derivative_name_prefix": "Llama",
    "outputs_may_improve_other_models": True,
    "eu_multimodal_restriction": False,
}


class LicenseTerms(WriteModel):
    """The terms that decide a use; every field is explicit, nothing is inferred from the name."""

    name: Name
    version_date: IsoDate | None = None
    license_url: Url | None = None
    acceptable_use_policy_url: Url | None = None
    hub_license_id: str | None = Field(default=None, max_length=64, description="The Hub's `license:` value.")
    hub_license_name: str | None = Field(default=None, max_length=64, description="`license_name` when `other`.")
    spdx_ref: str | None = Field(default=None, max_length=128, examples=["LicenseRef-scancode-llama-3.1-license-2024"])
    commercial_use: StrictBool
    mau_threshold: Integer | None = Field(
        default=None,
        ge=1,
        le=100_000_000_000,
        description="Monthly active users above which Meta's permission is needed.",
    )
    attribution_text: str | None = Field(default=None, max_length=200, examples=["Built with Llama"])
    derivative_name_prefix: str | None = Field(default=None, max_length=64, examples=["Llama"])
    outputs_may_improve_other_models: StrictBool = True
    eu_multimodal_restriction: StrictBool = False
    notice_text: Note | None = None
    source_note: Note | None = None
    unverified: list[str] = Field(
        default_factory=list, max_length=50, description="Fields whose values are unconfirmed."
    )


class LicenseCreate(LicenseTerms):
    model_config = ConfigDict(json_schema_extra={"examples": [_LICENSE_EXAMPLE]})

    slug: Slug


class LicenseUpdate(WriteModel):
    """Fields to change; absent fields stay as they are."""

    name: NotNull[Name] = None
    version_date: IsoDate | None = None
    license_url: Url | None = None
    acceptable_use_policy_url: Url | None = None
    hub_license_id: str | None = Field(default=None, max_length=64)
    hub_license_name: str | None = Field(default=None, max_length=64)
    spdx_ref: str | None = Field(default=None, max_length=128)
    commercial_use: NotNull[StrictBool] = None
    mau_threshold: Integer | None = Field(default=None, ge=1, le=100_000_000_000)
    attribution_text: str | None = Field(default=None, max_length=200)
    derivative_name_prefix: str | None = Field(default=None, max_length=64)
    outputs_may_improve_other_models: NotNull[StrictBool] = None
    eu_multimodal_restriction: NotNull[StrictBool] = None
    notice_text: Note | None = None
    source_note: Note | None = None
    unverified: NotNull[Annotated[list[str], Field(max_length=50)]] = None


class LicenseRead(ReadModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_LICENSE_EXAMPLE]})

    id: uuid.UUID
    slug: str
    name: str
    version_date: date | None
    license_url: str | None
    acceptable_use_policy_url: str | None
    hub_license_id: str | None
    hub_license_name: str | None
    spdx_ref: str | None
    commercial_use: bool
    mau_threshold: int | None
    attribution_text: str | None
    derivative_name_prefix: str | None
    outputs_may_improve_other_models: bool
    eu_multimodal_restriction: bool
    notice_text: str | None
    source_note: str | None
    unverified: list[str]
    created_at: datetime
    updated_at: datetime


class UseDescription(WriteModel):
    """A described use of a model, to check against its licence."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "monthly_active_users": 1200000,
                    "commercial": True,
                    "derivative_name": "Llama-Acme-8B",
                    "outputs_train_other_models": False,
                    "eu_domiciled": True,
                    "multimodal": False,
                    "redistributes": True,
                }
            ]
        }
    )

    monthly_active_users: Integer = Field(
        default=0,
        ge=0,
        le=100_000_000_000,
        description="Of the licensee's products, in the month before the licence version's release date.",
    )
    commercial: StrictBool = True
    derivative_name: str | None = Field(
        default=None, min_length=1, max_length=200, description="Name of a derivative model you distribute."
    )
    outputs_train_other_models: StrictBool = Field(
        default=False, description="Outputs are used to train or improve another model."
    )
    eu_domiciled: StrictBool = Field(
        default=False,
        description="An individual domiciled in, or a company whose principal place of business is in, the EU.",
    )
    end_user_of_product: StrictBool = Field(
        default=False, description="Only an end user of a product or service that incorporates the model."
    )
    multimodal: StrictBool | None = Field(
        default=None, description="The model is multimodal. Defaults to the model's modalities (model check) or false."
    )
    redistributes: StrictBool = Field(
        default=False, description="You distribute the model, a derivative, or a product with it."
    )


class Clause(ReadModel):
    clause: str = Field(description="Which term decided this.", examples=["mau_threshold"])
    outcome: Verdict
    explanation: str


class Obligation(ReadModel):
    obligation: str = Field(examples=["attribution"])
    requirement: str


class LicenseCheck(ReadModel):
    license: str = Field(description="The licence slug that was applied.")
    verdict: Verdict = Field(description="The strictest outcome among the clauses.")
    clauses: list[Clause]
    obligations: list[Obligation]
    unverified_terms: list[str] = Field(description="Terms of this licence recorded as unconfirmed.")
    disclaimer: str = "A reading of recorded licence terms to guide a decision, not legal advice."
