"""Reporting measures: SES notifications into Postgres trend tables, insights and reports."""
