-- One database per library of the federation profile (zz_city is the image's own).
CREATE DATABASE zz_d1;
CREATE DATABASE zz_d2;
