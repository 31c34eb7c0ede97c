//! Issuer keys in a hardware security module, through PKCS#11 (`cryptoki`),
//! with `signing.pkcs11` set: new ES256 keys are generated inside the token
//! (sensitive, never extractable, labelled and identified by their key ID)
//! and every signature is made there (`CKM_ECDSA` over the SHA-256 digest)
//! and checked against the published key before it is returned. The
//! database holds only a reference (`pkcs11:<key id>`) where a software key
//! holds its sealed envelope. Tested against SoftHSM2.
//!
//! A lost session (the HSM restarted, the token was re-inserted, the login
//! ended) is opened again and the call tried once more. PKCS#11 calls block:
//! callers run them off the async runtime's threads.
//!
//! Standard PKCS#11 defines no SM2 mechanism (GM/T devices have their own
//! interface), so with a token configured SM2 keys are refused rather than
//! kept in software beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest;
use zhengzhao_crypto::{Es256PublicKey, IssuerPublicKey};

/// What `private_envelope` holds for a key in the token: this, then the label.
pub const REFERENCE_PREFIX: &[u8] = b"pkcs11:";

/// DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Why the token did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It cannot be reached, or failed: nothing was done; try again.
    #[error("PKCS#11 token: {0}")]
    Unavailable(String),
    /// It refuses for good, or holds something it must not (a key that is
    /// not the one published): an operator must look.
    #[error("PKCS#11 token: {0}")]
    Refused(String),
}

/// Where the token is and how to log in (`signing.pkcs11`).
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN.
    pub pin: String,
}

impl TokenConfig {
    /// From `signing.pkcs11`, reading the PIN from `pin_file` or `pin`.
    pub fn from_config(c: &zhengzhao_config::Pkcs11Config) -> Result<Self, String> {
        let pin = match (&c.pin, &c.pin_file) {
            (Some(pin), None) => pin.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| format!("pin_file {}: {e}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            _ => return Err("give the user PIN as exactly one of pin_file and pin".into()),
        };
        if pin.is_empty() {
            return Err("the user PIN is empty".into());
        }
        if c.token_label.is_empty() || c.token_label.len() > 32 {
            return Err("token_label: 1 to 32 bytes, as PKCS#11 labels are".into());
        }
        Ok(TokenConfig { module: c.module.clone(), token_label: c.token_label.clone(), pin })
    }
}

/// A logged-in session, how many times it was opened, and whether the
/// token refused a new login (then no call logs in again: a PIN attempt is
/// never spent twice; restart after fixing it).
struct State {
    session: Session,
    epoch: u64,
    refused: Option<TokenError>,
}

/// The token that holds the issuer keys, with one logged-in session.
pub struct Token {
    config: TokenConfig,
    ctx: Pkcs11,
    state: Mutex<State>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?})", self.config.token_label)
    }
}

/// Each module is loaded and initialised once per process (a second
/// `C_Initialize` is an error), whatever number of services use it.
fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| TokenError::Unavailable("the module table is poisoned".into()))?;
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path)
        .map_err(|e| TokenError::Refused(format!("loading the module {}: {}", path.display(), short(&e))))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(TokenError::Unavailable(format!("initialising the module {}: {}", path.display(), short(&e))));
        }
    }
    modules.insert(path.to_owned(), m.clone());
    Ok(m)
}

/// A PKCS#11 error in a line (its code, not the standard's paragraph).
fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("{rv:?} from {f:?}"),
        other => format!("{other:?}"),
    }
}

/// Whether `e` means the session is gone (open it again and retry).
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid,
            _
        )
    )
}

/// One try of a call on the session.
enum Attempt {
    /// The session is gone: open it again and retry once.
    Lost(String),
    Failed(TokenError),
}

impl From<TokenError> for Attempt {
    fn from(e: TokenError) -> Self {
        Attempt::Failed(e)
    }
}

fn ck(what: &'static str) -> impl Fn(CkError) -> Attempt {
    move |e| {
        let text = format!("{what}: {}", short(&e));
        if session_lost(&e) { Attempt::Lost(text) } else { Attempt::Failed(TokenError::Unavailable(text)) }
    }
}

impl Token {
    /// Opens the token `signing.pkcs11` names, if it names one.
    pub fn from_config(c: &zhengzhao_config::SigningConfig) -> Result<Option<Arc<Self>>, String> {
        c.pkcs11
            .as_ref()
            .map(|p| {
                TokenConfig::from_config(p)
                    .and_then(|t| Token::open(t).map_err(|e| e.to_string()))
                    .map_err(|e| format!("signing.pkcs11: {e}"))
            })
            .transpose()
    }

    /// Opens a session on the token labelled `config.token_label` and logs in.
    pub fn open(config: TokenConfig) -> Result<Arc<Self>, TokenError> {
        let ctx = module(&config.module)?;
        let session = login(&ctx, &config)?;
        Ok(Arc::new(Token { config, ctx, state: Mutex::new(State { session, epoch: 0, refused: None }) }))
    }

    /// Runs `f` on the session; when the session is lost, opens a new one,
    /// logs in and runs `f` once more.
    fn with_session<T>(&self, mut f: impl FnMut(&Session, u64) -> Result<T, Attempt>) -> Result<T, TokenError> {
        let mut state =
            self.state.lock().map_err(|_| TokenError::Unavailable("the session lock is poisoned".into()))?;
        if let Some(refused) = &state.refused {
            return Err(refused.clone());
        }
        match f(&state.session, state.epoch) {
            Ok(v) => Ok(v),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::Lost(why)) => {
                tracing::warn!(token = %self.config.token_label, why = %why, "PKCS#11 session lost: logging in again");
                state.session = match login(&self.ctx, &self.config) {
                    Ok(s) => s,
                    Err(e @ TokenError::Refused(_)) => {
                        state.refused = Some(e.clone());
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                state.epoch += 1;
                match f(&state.session, state.epoch) {
                    Ok(v) => Ok(v),
                    Err(Attempt::Failed(e)) => Err(e),
                    Err(Attempt::Lost(why)) => Err(TokenError::Unavailable(why)),
                }
            }
        }
    }

    /// Generates a P-256 key pair labelled and identified `key_id` in the
    /// token: the private half sensitive, never extractable, for signing only.
    pub fn generate_es256(self: &Arc<Self>, key_id: &str) -> Result<TokenKey, TokenError> {
        let label = key_id.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let (handle, point, epoch) = self.with_session(|s, epoch| {
            let (public, private) = s
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template)
                .map_err(ck("generating a P-256 key"))?;
            Ok((private, ec_point(s, public)?, epoch))
        })?;
        let public = Es256PublicKey::from_sec1(&point)
            .map_err(|e| TokenError::Refused(format!("the generated key's public half: {e}")))?;
        Ok(TokenKey {
            token: self.clone(),
            key_id: key_id.to_owned(),
            public: IssuerPublicKey::Es256(public),
            handle: Mutex::new((epoch, handle)),
        })
    }

    /// The private key `key_id` (label and ID), checked to have been made in
    /// the token and never to have left it, and its public half in the token
    /// to be `public` (the key the library published).
    pub fn find(self: &Arc<Self>, key_id: &str, public: IssuerPublicKey) -> Result<TokenKey, TokenError> {
        let (handle, epoch) = self.with_session(|s, epoch| Ok((lookup(s, key_id, &public)?, epoch)))?;
        Ok(TokenKey { token: self.clone(), key_id: key_id.to_owned(), public, handle: Mutex::new((epoch, handle)) })
    }
}

/// Logs in to the token labelled as configured, on a new session; refuses
/// to spend the last PIN attempt (or any, on a locked PIN).
fn login(ctx: &Pkcs11, config: &TokenConfig) -> Result<Session, TokenError> {
    let label = &config.token_label;
    let mut found: Option<Slot> = None;
    let mut seen = Vec::new();
    for slot in
        ctx.get_slots_with_token().map_err(|e| TokenError::Unavailable(format!("listing slots: {}", short(&e))))?
    {
        // Another token that cannot be read is not ours to fail on.
        match ctx.get_token_info(slot) {
            Ok(info) if info.label().trim_end() == label => {
                if info.user_pin_locked() {
                    return Err(TokenError::Refused(format!("token {label:?}: the user PIN is locked")));
                }
                if info.user_pin_final_try() {
                    return Err(TokenError::Refused(format!(
                        "token {label:?}: one PIN attempt is left; not spending it (check the PIN, then reset the count)"
                    )));
                }
                found = Some(slot);
                break;
            }
            Ok(info) => seen.push(format!("{:?}", info.label().trim_end())),
            Err(e) => seen.push(format!("a slot: {}", short(&e))),
        }
    }
    let slot = found
        .ok_or_else(|| TokenError::Unavailable(format!("no token labelled {label:?} (found: {})", seen.join(", "))))?;
    let session =
        ctx.open_rw_session(slot).map_err(|e| TokenError::Unavailable(format!("opening a session: {}", short(&e))))?;
    match session.login(UserType::User, Some(&AuthPin::new(config.pin.clone().into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired, _)) => {
            Err(TokenError::Refused(format!(
                "token {label:?}: the PIN is refused (wrong, locked or expired); not retrying"
            )))
        }
        Err(e) => Err(TokenError::Unavailable(format!("logging in to token {label:?}: {}", short(&e)))),
    }
}

/// The one private key labelled and identified `key_id`, made in the token
/// and never extractable, whose public half in the token is `public`.
fn lookup(s: &Session, key_id: &str, public: &IssuerPublicKey) -> Result<ObjectHandle, Attempt> {
    let name = key_id.as_bytes().to_vec();
    let private = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Label(name.clone()),
            Attribute::Id(name.clone()),
        ])
        .map_err(ck("finding a key"))?;
    let [handle] = private[..] else {
        return Err(
            TokenError::Refused(format!("{} private keys labelled {key_id} (1 expected)", private.len())).into()
        );
    };
    let wanted = [
        AttributeType::Sensitive,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::Local,
        AttributeType::Sign,
    ];
    let attrs = s.get_attributes(handle, &wanted).map_err(ck("reading a key's attributes"))?;
    let flag = |a: AttributeType| {
        attrs.iter().any(|x| {
            matches!(
                (a, x),
                (AttributeType::Sensitive, Attribute::Sensitive(true))
                    | (AttributeType::AlwaysSensitive, Attribute::AlwaysSensitive(true))
                    | (AttributeType::NeverExtractable, Attribute::NeverExtractable(true))
                    | (AttributeType::Local, Attribute::Local(true))
                    | (AttributeType::Sign, Attribute::Sign(true))
            )
        })
    };
    if let Some(missing) = wanted.iter().find(|a| !flag(**a)) {
        return Err(TokenError::Refused(format!(
            "the key {key_id} in the token is not one it made and kept (attribute {missing:?} not true)"
        ))
        .into());
    }
    let publics = s
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Label(name.clone()), Attribute::Id(name)])
        .map_err(ck("finding a public key"))?;
    let [public_handle] = publics[..] else {
        return Err(TokenError::Refused(format!("{} public keys labelled {key_id} (1 expected)", publics.len())).into());
    };
    if ec_point(s, public_handle)? != public.sec1() {
        return Err(
            TokenError::Refused(format!("the key {key_id} in the token is not the key the library published")).into()
        );
    }
    Ok(handle)
}

/// The uncompressed point of an EC public key object (`CKA_EC_POINT`, a DER
/// OCTET STRING, or the bare point from some modules).
fn ec_point(session: &Session, object: ObjectHandle) -> Result<Vec<u8>, Attempt> {
    let attrs = session.get_attributes(object, &[AttributeType::EcPoint]).map_err(ck("reading a public key"))?;
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        return Err(TokenError::Refused("a public key without an EC point".into()).into());
    };
    match p.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => Ok(rest.to_vec()),
        [0x04, ..] if p.len() == 65 => Ok(p),
        _ => Err(TokenError::Refused("an EC point of an unexpected form".into()).into()),
    }
}

/// An issuer key inside the token.
pub struct TokenKey {
    token: Arc<Token>,
    key_id: String,
    public: IssuerPublicKey,
    /// Its handle, valid in the session of that epoch.
    handle: Mutex<(u64, ObjectHandle)>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.key_id)
    }
}

impl TokenKey {
    pub fn public_key(&self) -> IssuerPublicKey {
        self.public.clone()
    }

    /// ES256 over `message`: the digest here, the signature in the token,
    /// checked against the published key before it is returned.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], TokenError> {
        let digest = sha2::Sha256::digest(message);
        let sig = self.token.with_session(|s, epoch| {
            let mut held = self.handle.lock().map_err(|_| TokenError::Unavailable("a poisoned lock".into()))?;
            if held.0 != epoch {
                *held = (epoch, lookup(s, &self.key_id, &self.public)?);
            }
            s.sign(&Mechanism::Ecdsa, held.1, &digest).map_err(ck("signing"))
        })?;
        let sig = <[u8; 64]>::try_from(sig.as_slice())
            .map_err(|_| TokenError::Refused(format!("a {}-byte ECDSA signature", sig.len())))?;
        if !self.public.verify(message, &sig) {
            return Err(TokenError::Refused(format!(
                "the token's key {} does not sign as the published key: nothing signed",
                self.key_id
            )));
        }
        Ok(sig)
    }
}

impl Token {
    /// Removes the key `key_id` (both halves) from the token: a key the
    /// library made and never recorded.
    pub fn destroy(&self, key_id: &str) -> Result<(), TokenError> {
        self.with_session(|s, _| {
            let name = key_id.as_bytes().to_vec();
            let objects = s
                .find_objects(&[Attribute::Label(name.clone()), Attribute::Id(name)])
                .map_err(ck("finding a key to remove"))?;
            for o in objects {
                s.destroy_object(o).map_err(ck("removing a key"))?;
            }
            Ok(())
        })
    }
}
