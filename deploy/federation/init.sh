#!/bin/sh
# Keys of the federation profile, laid out once in the fedkeys volume:
#   city/ d1/ d2/   each library's own keys (`zhengzhao init`): its master
#                   key, log key, service keys; the districts' token-keys.json
#                   is the city's, so one operator's tokens work everywhere
#   operator/       the city's token-signing key (no service mounts it)
#   gateway/        the gateway's credential and the public keys
#   sync/token      the sync job's token (30 days; FED_RENEW=1 mints anew)
set -eu
D=/data
if [ ! -d $D/operator ]; then
  for n in city d1 d2; do zhengzhao init --data-dir $D/$n >/dev/null; done
  for n in d1 d2; do cp $D/city/token-keys.json $D/$n/token-keys.json; done
  mkdir -m 700 $D/operator $D/gateway $D/sync
  mv $D/city/token-key.pem $D/operator/
  cp $D/city/token-keys.json $D/operator/
  for n in d1 d2; do rm $D/$n/token-key.pem; done
  install -m 600 $D/city/token-keys.json $D/city/service-keys.json $D/city/service-gateway.pem $D/gateway/
fi
if [ ! -f $D/sync/token ] || [ -n "${FED_RENEW:-}" ]; then
  umask 077
  zhengzhao token --data-dir $D/operator --role sync --agency 11100000000013338W --ttl 720h > $D/sync/token
fi
# Each service's volume gets a copy of its own directory only.
for n in city d1 d2 gateway sync; do
  if [ -d /out/$n ]; then cp -a $D/$n/. /out/$n/; fi
done
