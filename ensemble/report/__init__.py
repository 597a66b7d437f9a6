"""What a run reports: the models behind report.json (`schema`), the entries built from what the
run learnt (`entries`), the verdict on the paper's claim (`verdict`, with `comparison` and
`statistics` for the paired tests), the summary tables (`tables`), the files report.md and report.json
(`files`) and the plots (`plots`)."""

from ensemble.report.schema import BaselineReport, DatasetReport, EnsembleReport, EpochSpan, MemberReport, RunReport
from ensemble.report.tables import summary_table

__all__ = ["BaselineReport", "DatasetReport", "EnsembleReport", "EpochSpan", "MemberReport", "RunReport",
           "summary_table"]
