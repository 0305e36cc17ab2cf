"""Dagster metadata helpers shared by the assets."""

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame) -> dg.MetadataValue:
    """A DataFrame as Dagster table metadata (shown as a table in the UI)."""
    kinds = {"i": "int", "u": "int", "f": "float", "b": "bool"}
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), kinds.get(frame[c].dtype.kind, "string"))
                                     for c in frame.columns])
    records = [dg.TableRecord({str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
               for row in frame.to_dict(orient="records")]
    return dg.MetadataValue.table(records, schema=schema)
