//! The every-type table of `tests/types_live.rs` (and the snapshot tests):
//! its definition and three rows (extremes, the other extremes, all NULL).

/// The table `types`, one column of every type of docs/types.md.
pub const TABLE: &str = "CREATE TABLE types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  yr YEAR, after_yr INT UNSIGNED,
  d65 DECIMAL(65,30), d102 DECIMAL(10,2),
  f FLOAT, dbl DOUBLE,
  b64 BIT(64), b1 BIT(1),
  ch CHAR(10), vc VARCHAR(100), txt TEXT, l1 VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(300), bl BLOB,
  en ENUM('small','medium','large'), st SET('a','b','c','d'),
  dt DATE, dtm6 DATETIME(6), dtm DATETIME, ts3 TIMESTAMP(3) NULL DEFAULT NULL,
  tm TIME, tm6 TIME(6),
  js JSON, geo GEOMETRY
) DEFAULT CHARSET=utf8mb4";

/// Hex of the bytes 0..=255, in order.
pub fn all_bytes_hex() -> String {
    (0u8..=255).map(|b| format!("{b:02X}")).collect()
}

/// The INSERTs of rows 1, 2 and 3 (in UTC).
pub fn insert_rows() -> String {
    let nines35 = "9".repeat(35);
    let nines30 = "9".repeat(30);
    format!(
        "SET time_zone = '+00:00';
         INSERT INTO types VALUES (1,
           127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
           9223372036854775807, 18446744073709551615,
           2155, 4294967295,
           '{nines35}.{nines30}', 12.5,
           1.1, 0.1,
           0xFFFFFFFFFFFFFFFF, b'1',
           'abc', 'héllo 😀', 'line1\\nline2 \"q\"', 'café',
           0x00FF0102, 0x{hex}, 'blob',
           'medium', 'c,a',
           '2024-02-29', '2024-02-29 23:59:59.123456', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999',
           '-838:59:59', '-00:00:01.5',
           '{{\"a\":1,\"b\":[true,null,\"x\"],\"c\":{{\"d\":1.5}}}}', ST_GeomFromText('POINT(1 2)'));
         INSERT INTO types VALUES (2,
           -128, 0, -32768, 0, -8388608, 0, -2147483648, 0,
           -9223372036854775808, 0,
           0, 0,
           '-{nines35}.{nines30}', -0.01,
           -3.5, -1e300,
           0, b'0',
           '', '', '', '',
           0x00000000, x'', x'',
           'small', '',
           '1000-01-01', '1000-01-01 00:00:00.000000', '9999-12-31 23:59:59', '1970-01-01 00:00:01.000',
           '838:59:59', '00:00:00.000001',
           '[]', ST_GeomFromText('LINESTRING(0 0,1 1)'));
         INSERT INTO types (id) VALUES (3);",
        hex = all_bytes_hex()
    )
}
