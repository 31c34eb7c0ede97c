//! Issuer keys in a hardware security module, through PKCS#11 (`cryptoki`),
//! with `signing.pkcs11` set: new ES256 keys are generated inside the token
//! (sensitive, never extractable, labelled with their key ID) and every
//! signature is made there (`CKM_ECDSA` over the SHA-256 digest). The
//! database holds only a reference (`pkcs11:<key id>`) where a software key
//! holds its sealed envelope. Tested against SoftHSM2.
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
use cryptoki::types::AuthPin;
use sha2::Digest;
use zhengzhao_crypto::{Es256PublicKey, IssuerPublicKey};

/// What `private_envelope` holds for a key in the token: this, then the label.
pub const REFERENCE_PREFIX: &[u8] = b"pkcs11:";

/// DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

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

/// A logged-in session on the token that holds the issuer keys.
pub struct Token {
    session: Mutex<Session>,
    label: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({:?})", self.label)
    }
}

/// Each module is loaded and initialised once per process (a second
/// `C_Initialize` is an error), whatever number of services use it.
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES.get_or_init(Default::default).lock().map_err(|_| "PKCS#11 modules: poisoned")?;
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path).map_err(|e| format!("loading the PKCS#11 module {}: {e}", path.display()))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("initialising the PKCS#11 module {}: {e}", path.display())),
    }
    modules.insert(path.to_owned(), m.clone());
    Ok(m)
}

fn fail(what: &str) -> impl Fn(CkError) -> String + '_ {
    move |e| format!("PKCS#11: {what}: {e}")
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

impl Token {
    /// Opens the token `signing.pkcs11` names, if it names one.
    pub fn from_config(c: &zhengzhao_config::SigningConfig) -> Result<Option<Arc<Self>>, String> {
        c.pkcs11
            .as_ref()
            .map(|p| {
                TokenConfig::from_config(p).and_then(|t| Token::open(&t)).map_err(|e| format!("signing.pkcs11: {e}"))
            })
            .transpose()
    }

    /// Opens a session on the token labelled `config.token_label` and logs in.
    pub fn open(config: &TokenConfig) -> Result<Arc<Self>, String> {
        let ctx = module(&config.module)?;
        let mut found = None;
        let mut seen = Vec::new();
        for slot in ctx.get_slots_with_token().map_err(fail("listing slots"))? {
            // Another token that cannot be read is not ours to fail on.
            match ctx.get_token_info(slot) {
                Ok(info) if info.label().trim_end() == config.token_label => {
                    found = Some(slot);
                    break;
                }
                Ok(info) => seen.push(format!("{:?}", info.label().trim_end())),
                Err(e) => seen.push(format!("slot {slot}: {e}")),
            }
        }
        let slot = found.ok_or_else(|| {
            format!("PKCS#11: no token labelled {:?} (found: {})", config.token_label, seen.join("; "))
        })?;
        let session = ctx.open_rw_session(slot).map_err(fail("opening a session"))?;
        match session.login(UserType::User, Some(&AuthPin::new(config.pin.clone().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(format!("PKCS#11: logging in to token {:?}: {e}", config.token_label)),
        }
        Ok(Arc::new(Token { session: Mutex::new(session), label: config.token_label.clone() }))
    }

    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>, String> {
        self.session.lock().map_err(|_| "PKCS#11: the session lock is poisoned".to_owned())
    }

    /// Generates a P-256 key pair labelled `key_id` in the token: the
    /// private half sensitive and never extractable.
    pub fn generate_es256(self: &Arc<Self>, key_id: &str) -> Result<TokenKey, String> {
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
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let session = self.session()?;
        let (public, private) = session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template)
            .map_err(fail("generating a P-256 key"))?;
        let point = ec_point(&session, public)?;
        drop(session);
        let public = Es256PublicKey::from_sec1(&point).map_err(|e| format!("PKCS#11: the token's key: {e}"))?;
        Ok(TokenKey { token: self.clone(), handle: private, public: IssuerPublicKey::Es256(public) })
    }

    /// The private key labelled `key_id`, checked against `public` (the key
    /// the library published for it).
    pub fn find(self: &Arc<Self>, key_id: &str, public: IssuerPublicKey) -> Result<TokenKey, String> {
        let session = self.session()?;
        let label = Attribute::Label(key_id.as_bytes().to_vec());
        let private = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(KeyType::EC), label.clone()])
            .map_err(fail("finding a key"))?;
        let [handle] = private[..] else {
            return Err(format!(
                "PKCS#11: token {:?} holds {} private keys labelled {key_id} (1 expected)",
                self.label,
                private.len()
            ));
        };
        // The public half in the token is the one published.
        let publics = session
            .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label])
            .map_err(fail("finding a public key"))?;
        if let Some(p) = publics.first()
            && ec_point(&session, *p)? != public.sec1()
        {
            return Err(format!("PKCS#11: the token's key {key_id} is not the key the library published"));
        }
        Ok(TokenKey { token: self.clone(), handle, public })
    }
}

/// The uncompressed point of an EC public key object (`CKA_EC_POINT`, a DER
/// OCTET STRING, or the bare point from some modules).
fn ec_point(session: &Session, object: ObjectHandle) -> Result<Vec<u8>, String> {
    let attrs = session.get_attributes(object, &[AttributeType::EcPoint]).map_err(fail("reading a public key"))?;
    let Some(Attribute::EcPoint(p)) = attrs.into_iter().next() else {
        return Err("PKCS#11: the public key has no EC point".into());
    };
    match p.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => Ok(rest.to_vec()),
        [0x04, ..] if p.len() == 65 => Ok(p),
        _ => Err("PKCS#11: an EC point of an unexpected form".into()),
    }
}

/// An issuer key inside the token.
#[derive(Clone)]
pub struct TokenKey {
    token: Arc<Token>,
    handle: ObjectHandle,
    public: IssuerPublicKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({:?})", self.token.label)
    }
}

impl TokenKey {
    pub fn public_key(&self) -> IssuerPublicKey {
        self.public.clone()
    }

    /// ES256 over `message`: the digest here, the signature in the token.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], String> {
        let digest = sha2::Sha256::digest(message);
        let session = self.token.session()?;
        let sig = session.sign(&Mechanism::Ecdsa, self.handle, &digest).map_err(fail("signing"))?;
        <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| format!("PKCS#11: a {}-byte ECDSA signature", sig.len()))
    }
}
