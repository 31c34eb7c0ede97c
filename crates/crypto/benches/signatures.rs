//! Benchmark (not a test): ES256 sign and verify rates on one core, of the
//! paths the signing and verification services use, as ratios to the fastest
//! P-256 implementation buildable here (`aws-lc-rs` called directly), all
//! measured in the same run, interleaved round by round so machine noise hits
//! every contender alike. `p256` (the second backend) is measured for
//! reference. SM2-with-SM3 likewise against the fastest SM2 buildable here,
//! `efficient-sm2` called directly with `Z` computed once (the verification
//! backend; it signs in variable time, so the signing service signs with the
//! constant-time `sm2`).
//!
//! `cargo bench -p zhengzhao-crypto --bench signatures` (`BENCH_ROUNDS`,
//! default 7, of `BENCH_MS` milliseconds each, default 400).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use zhengzhao_crypto::{Algorithm, IssuerKeyPair, IssuerPublicKey, JwsHeader, jws};

/// Operations per second of `f` over about `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..32 {
            f();
        }
        n += 32;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds = env("BENCH_ROUNDS", 7) as usize;
    let budget = Duration::from_millis(env("BENCH_MS", 400));
    // A licence-sized payload, signed as the signing service signs it.
    let payload = vec![b'x'; 1200];
    let header =
        JwsHeader { alg: "ES256".into(), kid: Some("k".into()), typ: None, iat: Some(1_800_000_000), x5c: None };
    let input = jws::signing_input(&header, &payload);
    let msg = input.as_bytes();

    let ours = IssuerKeyPair::generate(Algorithm::Es256);
    let public = ours.public_key();
    let IssuerPublicKey::Es256(es_public) = public.clone() else { unreachable!("an ES256 key") };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let raw = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key generation");
    let raw_public =
        aws_lc_rs::signature::ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw.public_key().as_ref()).expect("key");
    let raw_sig = raw.sign(&rng, msg).expect("sign");
    let our_sig = ours.sign(msg);
    let sm2 = IssuerKeyPair::generate(Algorithm::Sm2Sm3);
    let sm2_public = sm2.public_key();
    let sm2_sig = sm2.sign(msg);
    let IssuerPublicKey::Sm2(sm2_key) = sm2_public.clone() else { unreachable!("an SM2 key") };
    let sm2_sec1: [u8; 65] = sm2_key.to_sec1().try_into().expect("uncompressed");
    let fast_public = efficient_sm2::PublicKey::from_slice(&sm2_sec1[1..]);
    let fast_pair = efficient_sm2::KeyPair::new(&sm2.secret_bytes()).expect("key");
    let z = sm2_key.z();
    let digest = |m: &[u8]| -> [u8; 32] {
        use sm3::Digest;
        let mut h = sm3::Sm3::new();
        h.update(z);
        h.update(m);
        h.finalize().into()
    };
    struct OsRandom;
    impl efficient_sm2::SecureRandom for OsRandom {
        fn fill(&mut self, dest: &mut [u8]) {
            getrandom::fill(dest).expect("random");
        }
    }
    let fast_sig = efficient_sm2::Signature::from_slice(&sm2_sig).expect("signature");

    let names = [
        "sign: aws-lc-rs direct (baseline)",
        "sign: ours (IssuerKeyPair::sign)",
        "sign: ours + JWS assembly",
        "verify: aws-lc-rs direct (baseline)",
        "verify: ours (IssuerPublicKey::verify)",
        "verify: ours + JWS parse",
        "verify: p256 backend (reference)",
        "sm2 sign: efficient-sm2 direct (baseline)",
        "sm2 sign: ours (sm2, constant-time)",
        "sm2 verify: efficient-sm2 direct (baseline)",
        "sm2 verify: ours (IssuerPublicKey::verify)",
        "sm2 verify: sm2 backend (reference)",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let compact = jws::assemble(&input, &our_sig);
    for round in 0..rounds {
        let r = [
            rate(budget, || {
                black_box(raw.sign(&rng, black_box(msg)).ok());
            }),
            rate(budget, || {
                black_box(ours.sign(black_box(msg)));
            }),
            rate(budget, || {
                let input = jws::signing_input(&header, black_box(&payload));
                black_box(jws::assemble(&input, &ours.sign(input.as_bytes())));
            }),
            rate(budget, || {
                black_box(raw_public.verify_sig(black_box(msg), raw_sig.as_ref()).is_ok());
            }),
            rate(budget, || {
                black_box(public.verify(black_box(msg), &our_sig));
            }),
            rate(budget, || {
                let p = jws::parse(black_box(&compact)).expect("parse");
                black_box(public.verify(p.signing_input.as_bytes(), &p.signature));
            }),
            rate(budget, || {
                black_box(es_public.verify_p256(black_box(msg), &our_sig));
            }),
            rate(budget, || {
                black_box(fast_pair.sign_digest(&mut OsRandom, &digest(black_box(msg))).ok());
            }),
            rate(budget, || {
                black_box(sm2.sign(black_box(msg)));
            }),
            rate(budget, || {
                black_box(fast_sig.verify_digest(&fast_public, &digest(black_box(msg))).is_ok());
            }),
            rate(budget, || {
                black_box(sm2_public.verify(black_box(msg), &sm2_sig));
            }),
            rate(budget, || {
                black_box(sm2_key.verify_sm2(black_box(msg), &sm2_sig));
            }),
        ];
        for (i, v) in r.into_iter().enumerate() {
            rates[i].push(v);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let m: Vec<f64> = rates.into_iter().map(median).collect();
    println!("one core, median of {rounds} interleaved rounds of {budget:?}, {}-byte JWS signing input", msg.len());
    for (i, name) in names.iter().enumerate() {
        let base = match name.split(':').next() {
            Some("sign") => m[0],
            Some("verify") => m[3],
            Some("sm2 sign") => m[7],
            _ => m[9],
        };
        println!("{name:<44} {:>9.0} ops/s   ratio {:.2}", m[i], m[i] / base);
    }
    let met = |r: f64| if r >= 0.8 { "met" } else { "NOT met" };
    let (sign_ratio, verify_ratio) = (m[1] / m[0], m[4] / m[3]);
    println!(
        "ES256 goal >= 0.80 of the fastest: sign {sign_ratio:.2} {}, verify {verify_ratio:.2} {}",
        met(sign_ratio),
        met(verify_ratio)
    );
    let (sm2_sign, sm2_verify) = (m[8] / m[7], m[10] / m[9]);
    println!(
        "SM2 goal >= 0.80 of the fastest: sign {sm2_sign:.2} {} (constant-time signing by choice), verify {sm2_verify:.2} {}",
        met(sm2_sign),
        met(sm2_verify)
    );
}
