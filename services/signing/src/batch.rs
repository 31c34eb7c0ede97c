//! Signing a batch of documents over several threads, all or nothing.

use zhengzhao_proto::ServiceError;

use crate::Signed;

/// Signs every payload with `sign`, spread over up to `threads` threads, in
/// the payloads' order. All or nothing: a worker that fails (panics) fails
/// the whole batch, so no caller can pair a document with another's signature.
pub(crate) fn sign_all<F>(payloads: &[Vec<u8>], threads: usize, sign: F) -> Result<Vec<Signed>, ServiceError>
where
    F: Fn(&[u8]) -> Result<Signed, ServiceError> + Sync,
{
    let threads = threads.clamp(1, payloads.len().max(1));
    let chunk = payloads.len().div_ceil(threads).max(1);
    type Part = Result<Vec<Signed>, ServiceError>;
    let parts: Vec<std::thread::Result<Part>> = std::thread::scope(|scope| {
        let sign = &sign;
        let handles: Vec<_> = payloads
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| sign(p)).collect::<Part>()))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut out = Vec::with_capacity(payloads.len());
    for part in parts {
        match part {
            Ok(Ok(signed)) => out.extend(signed),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ServiceError::internal("a signing worker failed: the batch is not signed")),
        }
    }
    if out.len() != payloads.len() {
        return Err(ServiceError::internal(format!(
            "signing made {} signatures for {} documents: the batch is not signed",
            out.len(),
            payloads.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zhengzhao_crypto::Algorithm;

    fn fake_sign(p: &[u8]) -> Result<Signed, ServiceError> {
        Ok(Signed { jws: String::from_utf8_lossy(p).into_owned(), key_id: "k".into(), algorithm: Algorithm::Es256 })
    }

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("doc-{i}").into_bytes()).collect()
    }

    #[test]
    fn a_batch_gets_one_signature_per_document_in_order() {
        for (n, threads) in [(1, 1), (7, 2), (1000, 3), (5, 64), (0, 2)] {
            let docs = payloads(n);
            let signed = sign_all(&docs, threads, fake_sign).unwrap();
            let got: Vec<&str> = signed.iter().map(|s| s.jws.as_str()).collect();
            let want: Vec<String> = (0..n).map(|i| format!("doc-{i}")).collect();
            assert_eq!(got, want, "{n} documents on {threads} threads");
        }
    }

    #[test]
    fn a_failing_document_fails_the_whole_batch() {
        // One document makes its worker panic (as a signing fault would): the
        // batch returns an error, never the other workers' signatures alone.
        let docs = payloads(10);
        for threads in [1, 2, 4] {
            let got = sign_all(&docs, threads, |p| {
                assert_ne!(p, b"doc-7", "injected signing fault");
                fake_sign(p)
            });
            match got {
                Err(ServiceError::Internal(m)) => assert!(m.contains("batch is not signed"), "{m}"),
                other => panic!("{threads} threads: expected the batch to fail, got {other:?}"),
            }
        }
    }
}
