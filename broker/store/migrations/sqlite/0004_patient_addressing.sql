-- Workflows that accept GPPROVIDER patient addressing, and the local demographics directory it routes with.
-- Numbered 0004: 0003 is taken by another change, and the runner applies any version not yet recorded.
ALTER TABLE workflows ADD COLUMN patient_addressing INTEGER NOT NULL DEFAULT 0;

CREATE TABLE patients (
    nhs_number      TEXT PRIMARY KEY,
    date_of_birth   TEXT,
    family_name     TEXT NOT NULL,
    gp_ods_code     TEXT NOT NULL DEFAULT ''
);
