-- One database per service (run once by the postgres image on an empty volume).
CREATE DATABASE protools;
CREATE DATABASE generator;
CREATE DATABASE mailer;
