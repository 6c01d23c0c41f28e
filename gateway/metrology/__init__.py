"""Metrology: a meter's calibration status at a time (`status`), the calibration register
and its certificate files (`calibration`, `dcc`), and measurement uncertainty
(`uncertainty`). Pure rules over the shared model, and the register kept in the store."""
