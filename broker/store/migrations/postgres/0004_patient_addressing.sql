-- Workflows that accept GPPROVIDER patient addressing, and the local demographics directory it routes with.
-- Numbered 0004: 0003 is taken by another change, and the runner applies any version not yet recorded.
ALTER TABLE workflows ADD COLUMN patient_addressing boolean NOT NULL DEFAULT false;

CREATE TABLE patients (
    nhs_number      text PRIMARY KEY,
    date_of_birth   date,
    family_name     text NOT NULL,
    gp_ods_code     text NOT NULL DEFAULT ''
);
