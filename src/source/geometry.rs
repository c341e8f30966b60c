//! GEOMETRY values (4-byte little-endian SRID + WKB) → WKT text.
//!
//! Output is a JSON string: `"POINT(1 2)"`, or `"SRID=4326;POINT(1 2)"`
//! (EWKT) when the SRID is not 0. Coordinates are printed in storage order
//! (x y) in the shortest round-trip form, integers without a fraction.

use super::bytes::{le_uint, take, Fault};

/// GEOMETRYCOLLECTIONs nest; real data never gets near this.
const MAX_DEPTH: usize = 32;

struct Wkb<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Wkb<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let b = take(rest, n)?;
        self.pos += n;
        Ok(b)
    }

    fn u32(&mut self, little: bool) -> Result<u32, Fault> {
        let b = self.bytes(4)?;
        let a = <[u8; 4]>::try_from(b).map_err(|_| Fault::bad("short u32"))?;
        Ok(if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    fn f64(&mut self, little: bool) -> Result<f64, Fault> {
        let b = self.bytes(8)?;
        let a = <[u8; 8]>::try_from(b).map_err(|_| Fault::bad("short f64"))?;
        Ok(if little {
            f64::from_le_bytes(a)
        } else {
            f64::from_be_bytes(a)
        })
    }

    /// Byte order + type header; returns (little_endian, type).
    fn header(&mut self) -> Result<(bool, u32), Fault> {
        let little = match self.bytes(1)? {
            [0] => false,
            [1] => true,
            [b] => return Err(Fault::bad(format!("WKB byte order {b:#04x}"))),
            _ => return Err(Fault::bad("WKB header")),
        };
        Ok((little, self.u32(little)?))
    }
}

fn write_coord(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(if v.is_nan() {
            b"NaN"
        } else if v > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
        return;
    }
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(v);
    let s = s.strip_suffix(".0").unwrap_or(s);
    out.extend_from_slice(s.as_bytes());
}

fn write_point_body(w: &mut Wkb, little: bool, out: &mut Vec<u8>) -> Result<(), Fault> {
    let x = w.f64(little)?;
    let y = w.f64(little)?;
    write_coord(out, x);
    out.push(b' ');
    write_coord(out, y);
    Ok(())
}

/// "(x y,x y,...)" for `n` points.
fn write_points(w: &mut Wkb, little: bool, out: &mut Vec<u8>) -> Result<(), Fault> {
    let n = w.u32(little)?;
    out.push(b'(');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        write_point_body(w, little, out)?;
    }
    out.push(b')');
    Ok(())
}

fn write_rings(w: &mut Wkb, little: bool, out: &mut Vec<u8>) -> Result<(), Fault> {
    let n = w.u32(little)?;
    out.push(b'(');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        write_points(w, little, out)?;
    }
    out.push(b')');
    Ok(())
}

fn tag(t: u32) -> Result<&'static [u8], Fault> {
    Ok(match t {
        1 => b"POINT",
        2 => b"LINESTRING",
        3 => b"POLYGON",
        4 => b"MULTIPOINT",
        5 => b"MULTILINESTRING",
        6 => b"MULTIPOLYGON",
        7 => b"GEOMETRYCOLLECTION",
        t => return Err(Fault::bad(format!("unknown WKB geometry type {t}"))),
    })
}

/// One WKB geometry (header included) as tagged WKT; `expect` restricts the
/// type (members of MULTI* collections), and `tagged` prints the tag.
fn write_geom(
    w: &mut Wkb,
    out: &mut Vec<u8>,
    depth: usize,
    expect: Option<u32>,
    tagged: bool,
) -> Result<(), Fault> {
    if depth > MAX_DEPTH {
        return Err(Fault::bad("GEOMETRYCOLLECTION nested too deep"));
    }
    let (little, t) = w.header()?;
    if let Some(e) = expect {
        if e != t {
            return Err(Fault::bad(format!(
                "WKB member type {t} in a collection of {e}"
            )));
        }
    }
    let name = tag(t)?;
    if tagged {
        out.extend_from_slice(name);
    }
    match t {
        1 => {
            out.push(b'(');
            write_point_body(w, little, out)?;
            out.push(b')');
        }
        2 => write_points(w, little, out)?,
        3 => write_rings(w, little, out)?,
        _ => {
            let n = w.u32(little)?;
            if n == 0 {
                out.extend_from_slice(b" EMPTY");
                return Ok(());
            }
            let member = match t {
                4 => Some(1),
                5 => Some(2),
                6 => Some(3),
                _ => None,
            };
            out.push(b'(');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                // MULTI* members print untagged, so MULTIPOINT((1 2),(3 4));
                // GEOMETRYCOLLECTION members print with their tag.
                write_geom(w, out, depth + 1, member, member.is_none())?;
            }
            out.push(b')');
        }
    }
    Ok(())
}

/// GEOMETRY column payload (SRID + WKB) → a JSON string of (E)WKT.
pub(crate) fn write_geometry(data: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
    let srid = le_uint(data, 4)?;
    let mut w = Wkb {
        data: data.get(4..).unwrap_or(&[]),
        pos: 0,
    };
    out.push(b'"');
    if srid != 0 {
        out.extend_from_slice(b"SRID=");
        super::bytes::write_u64(out, srid);
        out.push(b';');
    }
    write_geom(&mut w, out, 0, None, true)?;
    if w.pos != w.data.len() {
        return Err(Fault::bad(format!(
            "{} trailing bytes after the WKB geometry",
            w.data.len() - w.pos
        )));
    }
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pt(x: f64, y: f64) -> Vec<u8> {
        let mut v = vec![1, 1, 0, 0, 0];
        v.extend_from_slice(&x.to_le_bytes());
        v.extend_from_slice(&y.to_le_bytes());
        v
    }

    fn coords(p: &[(f64, f64)]) -> Vec<u8> {
        let mut v = (p.len() as u32).to_le_bytes().to_vec();
        for (x, y) in p {
            v.extend_from_slice(&x.to_le_bytes());
            v.extend_from_slice(&y.to_le_bytes());
        }
        v
    }

    fn geom(t: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![1];
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn multi(t: u32, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut body = (parts.len() as u32).to_le_bytes().to_vec();
        for p in parts {
            body.extend_from_slice(p);
        }
        geom(t, &body)
    }

    fn wkt(srid: u32, wkb: &[u8]) -> Result<String, Fault> {
        let mut data = srid.to_le_bytes().to_vec();
        data.extend_from_slice(wkb);
        let mut out = Vec::new();
        write_geometry(&data, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn shapes() {
        assert_eq!(wkt(0, &pt(1.0, 2.0)).unwrap(), "\"POINT(1 2)\"");
        assert_eq!(
            wkt(4326, &pt(-0.5, 1.1)).unwrap(),
            "\"SRID=4326;POINT(-0.5 1.1)\""
        );
        // big-endian point
        let mut be = vec![0, 0, 0, 0, 1];
        be.extend_from_slice(&3.25f64.to_be_bytes());
        be.extend_from_slice(&4.0f64.to_be_bytes());
        assert_eq!(wkt(0, &be).unwrap(), "\"POINT(3.25 4)\"");
        let ls = geom(2, &coords(&[(0.0, 0.0), (1.0, 1.0), (2.0, 0.5)]));
        assert_eq!(wkt(0, &ls).unwrap(), "\"LINESTRING(0 0,1 1,2 0.5)\"");
        let ring = coords(&[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]);
        let mut poly_body = 2u32.to_le_bytes().to_vec();
        poly_body.extend_from_slice(&ring);
        poly_body.extend_from_slice(&ring);
        let poly = geom(3, &poly_body);
        assert_eq!(
            wkt(0, &poly).unwrap(),
            "\"POLYGON((0 0,1 0,1 1,0 0),(0 0,1 0,1 1,0 0))\""
        );
        let mp = multi(4, &[pt(1.0, 2.0), pt(3.0, 4.0)]);
        assert_eq!(wkt(0, &mp).unwrap(), "\"MULTIPOINT((1 2),(3 4))\"");
        let mls = multi(5, &[ls.clone(), ls.clone()]);
        assert_eq!(
            wkt(0, &mls).unwrap(),
            "\"MULTILINESTRING((0 0,1 1,2 0.5),(0 0,1 1,2 0.5))\""
        );
        let mpoly = multi(6, std::slice::from_ref(&poly));
        assert_eq!(
            wkt(0, &mpoly).unwrap(),
            "\"MULTIPOLYGON(((0 0,1 0,1 1,0 0),(0 0,1 0,1 1,0 0)))\""
        );
        let gc = multi(7, &[pt(1.0, 2.0), ls.clone(), multi(7, &[])]);
        assert_eq!(
            wkt(0, &gc).unwrap(),
            "\"GEOMETRYCOLLECTION(POINT(1 2),LINESTRING(0 0,1 1,2 0.5),GEOMETRYCOLLECTION EMPTY)\""
        );
        assert_eq!(
            wkt(0, &multi(7, &[])).unwrap(),
            "\"GEOMETRYCOLLECTION EMPTY\""
        );
    }

    #[test]
    fn corrupt() {
        assert!(wkt(0, &[2, 1, 0, 0, 0]).is_err()); // byte order
        assert!(wkt(0, &geom(8, &[])).is_err()); // type
        assert!(wkt(0, &multi(4, &[geom(2, &coords(&[]))])).is_err()); // member type
        let mut p = pt(1.0, 2.0);
        p.push(0);
        assert!(wkt(0, &p).is_err()); // trailing
        let p = pt(1.0, 2.0);
        for n in 0..p.len() {
            assert!(wkt(0, &p[..n]).is_err());
        }
        let mut deep = pt(0.0, 0.0);
        for _ in 0..40 {
            deep = multi(7, &[deep]);
        }
        assert!(wkt(0, &deep).is_err());
    }

    proptest! {
        #[test]
        fn random_never_panics(bytes: Vec<u8>) {
            let mut out = Vec::new();
            let _ = write_geometry(&bytes, &mut out);
        }
    }
}
