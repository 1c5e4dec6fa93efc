"""Models of the ``data`` of built-in event types; any other type is a custom event.

Money is :class:`~decimal.Decimal` in major units (``19.90``) with an ISO 4217 currency, so
nothing is rounded on the way to a template. Extra keys are kept: templates may use them.
"""

from __future__ import annotations

import base64
import binascii
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
Text = Annotated[str, Field(max_length=2000)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class LineItem(_Data):
    sku: str = Field(min_length=1, max_length=100)
    name: Text = Field(min_length=1)
    quantity: int = Field(ge=1, le=100_000)
    unit_price: Money
    image_url: AnyHttpUrl | None = None


class Address(_Data):
    name: Text
    line1: Text
    line2: Text | None = None
    postal_code: str = Field(max_length=20)
    city: Text
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class Attachment(_Data):
    """A file to attach: inline as base64, or an S3 object fetched at send time."""

    filename: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\r\n\"]+$")
    content_type: str = Field(default="application/pdf", pattern=r"^[\w.+-]+/[\w.+-]+$")
    content_base64: str | None = None
    s3_bucket: str | None = Field(default=None, max_length=63)
    s3_key: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        inline = self.content_base64 is not None
        in_s3 = self.s3_bucket is not None and self.s3_key is not None
        if inline == in_s3:
            raise ValueError("give either content_base64, or both s3_bucket and s3_key")
        if inline:
            try:
                base64.b64decode(self.content_base64 or "", validate=True)
            except binascii.Error as exc:
                raise ValueError("content_base64 is not valid base64") from exc
        return self


class _Order(_Data):
    order_id: str = Field(min_length=1, max_length=100)
    items: list[LineItem] = Field(min_length=1, max_length=500)
    currency: Currency
    subtotal: Money | None = None
    shipping: Money | None = None
    tax: Money | None = None
    discount: Money | None = None
    total: Money
    order_url: AnyHttpUrl | None = None
    shipping_address: Address | None = None

    @model_validator(mode="after")
    def _subtotal_matches_items(self) -> _Order:
        if self.subtotal is not None:
            items_sum = sum((i.unit_price * i.quantity for i in self.items), Decimal(0))
            if items_sum != self.subtotal:
                raise ValueError(f"subtotal {self.subtotal} differs from the items' sum {items_sum}")
        return self


class PurchaseData(_Order):
    payment_method: Text | None = None


class OrderConfirmedData(_Order):
    estimated_delivery: date | None = None


class OrderShippedData(_Data):
    order_id: str = Field(min_length=1, max_length=100)
    carrier: Text = Field(min_length=1)
    tracking_number: str = Field(min_length=1, max_length=100)
    tracking_url: AnyHttpUrl
    estimated_delivery: date | None = None
    items: list[LineItem] = Field(default_factory=list, max_length=500)
    shipping_address: Address | None = None


class SignupData(_Data):
    source: Text | None = None
    confirm_url: AnyHttpUrl | None = None


class PasswordResetData(_Data):
    reset_url: AnyHttpUrl
    expires_in_minutes: int = Field(default=15, ge=1, le=1440)
    requested_from: Text | None = Field(default=None, description="Browser or city, shown to the user")


class InvoiceIssuedData(_Data):
    invoice_number: str = Field(min_length=1, max_length=100)
    order_id: str | None = Field(default=None, max_length=100)
    issued_on: date
    due_on: date | None = None
    currency: Currency
    total: Money
    tax: Money | None = None
    invoice_url: AnyHttpUrl | None = None
    pdf: Attachment


class AccountUpdatedData(_Data):
    changes: list[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]] = Field(min_length=1, max_length=20)
    changed_at: datetime | None = None
    security_url: AnyHttpUrl | None = None


class LegalUpdateData(_Data):
    document: str = Field(pattern=r"^[a-z_]{1,40}$", description="terms, privacy, cookies, ...")
    effective_on: date
    summary: list[Text] = Field(min_length=1, max_length=20)
    document_url: AnyHttpUrl

    @field_validator("summary")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        if any(not line.strip() for line in value):
            raise ValueError("summary lines cannot be blank")
        return value


BUILTIN_DATA_MODELS: dict[str, type[_Data]] = {
    "purchase": PurchaseData,
    "signup": SignupData,
    "password_reset": PasswordResetData,
    "order_confirmed": OrderConfirmedData,
    "order_shipped": OrderShippedData,
    "invoice_issued": InvoiceIssuedData,
    "account_updated": AccountUpdatedData,
    "legal_update": LegalUpdateData,
}
"""Event type → model of its ``data``. Types not listed are custom: their data is free-form."""
