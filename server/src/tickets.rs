//! Tickets and prepared-statement handles: self-contained and signed, so the server keeps no
//! state per statement and a restart or a second client cannot be confused by one.
//!
//! Each carries what running it needs (the SQL text, the bound parameters of a prepared
//! statement as an Arrow IPC stream), a random id (the key of the command-result memo and of
//! cancellation) and the name of the user it was issued to, followed by an HMAC-SHA256 over
//! all of it with a key drawn when the server starts. A ticket whose MAC fails was not issued
//! by this server (or was altered): INVALID_ARGUMENT. One presented by another user:
//! PERMISSION_DENIED (as Doris had to learn, a handle must be tied to its user).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use prost::bytes::Bytes;
use sha2::Sha256;
use tonic::Status;

/// The first byte of every ticket: its format.
const VERSION: u8 = 1;
const MAC_LEN: usize = 32;

/// What a ticket is for: a DoGet of a statement's results, or a prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Statement = 1,
    Prepared = 2,
}

/// The signed content of a ticket or a handle.
#[derive(Clone, PartialEq, Message)]
pub struct Body {
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub user: String,
    #[prost(string, tag = "4")]
    pub sql: String,
    /// The bound parameters, one row per execution, as an Arrow IPC stream.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub params: Option<Vec<u8>>,
}

impl Body {
    /// A new body with a fresh random id.
    pub fn new(kind: Kind, user: &str, sql: &str, params: Option<Vec<u8>>) -> Result<Body, Status> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| Status::internal(format!("no random numbers: {e}")))?;
        Ok(Body { kind: kind as u32, id: id.to_vec(), user: user.to_string(), sql: sql.to_string(), params })
    }
}

/// Signs and checks tickets with the server's key.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// A signer with a new random key: tickets of an earlier run of the server are void.
    pub fn new() -> Result<Signer, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Signer { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // A 32-byte key is valid for HMAC (any length is).
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// The bytes of a ticket: version, body, MAC.
    pub fn sign(&self, body: &Body) -> Bytes {
        let mut out = vec![VERSION];
        body.encode(&mut out).unwrap_or_else(|_| unreachable!("a Vec grows"));
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out.into()
    }

    /// The body of a ticket of `kind` issued to `user`, after checking its MAC.
    pub fn open(&self, bytes: &[u8], kind: Kind, user: &str) -> Result<Body, Status> {
        let what = match kind {
            Kind::Statement => "ticket",
            Kind::Prepared => "prepared statement handle",
        };
        let forged = || Status::invalid_argument(format!("not a {what} this server issued"));
        if bytes.len() < 1 + MAC_LEN || bytes[0] != VERSION {
            return Err(forged());
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| forged())?;
        let body = Body::decode(&signed[1..]).map_err(|_| forged())?;
        if body.kind != kind as u32 {
            return Err(forged());
        }
        if body.user != user {
            return Err(Status::permission_denied(format!("this {what} was issued to another user")));
        }
        Ok(body)
    }
}

/// Parameters as an Arrow IPC stream (schema and one batch).
pub fn encode_params(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
    writer.write(batch).map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
    writer.finish().map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
    drop(writer);
    Ok(out)
}

/// The parameter batch [`encode_params`] wrote (signed, so trusted to decode).
pub fn decode_params(bytes: &[u8]) -> Result<RecordBatch, Status> {
    let bad = |e: datafusion::arrow::error::ArrowError| Status::internal(format!("bound parameters: {e}"));
    let reader = StreamReader::try_new(bytes, None).map_err(bad)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
    datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_tied_to_their_signer_kind_and_user() {
        let signer = Signer::new().unwrap();
        let body = Body::new(Kind::Statement, "ana", "SELECT 1", None).unwrap();
        let ticket = signer.sign(&body);
        assert_eq!(signer.open(&ticket, Kind::Statement, "ana").unwrap(), body);
        let code = |r: Result<Body, Status>| r.unwrap_err().code();
        assert_eq!(code(signer.open(&ticket, Kind::Statement, "bob")), tonic::Code::PermissionDenied);
        assert_eq!(code(signer.open(&ticket, Kind::Prepared, "ana")), tonic::Code::InvalidArgument);
        assert_eq!(code(Signer::new().unwrap().open(&ticket, Kind::Statement, "ana")), tonic::Code::InvalidArgument);
        for i in 0..ticket.len() {
            let mut tampered = ticket.to_vec();
            tampered[i] ^= 1;
            assert_eq!(code(signer.open(&tampered, Kind::Statement, "ana")), tonic::Code::InvalidArgument, "{i}");
        }
        assert_eq!(code(signer.open(&ticket[..10], Kind::Statement, "ana")), tonic::Code::InvalidArgument);
        assert_eq!(code(signer.open(b"", Kind::Statement, "ana")), tonic::Code::InvalidArgument);
    }
}
