/* Written for this skeleton: the one call of esp-aws-iot master's OTA demo that decides where the certificate is. */
#include <stdbool.h>

extern const char pcAwsCodeSigningCertPem[] asm( "_binary_aws_codesign_crt_start" );
bool otaPal_SetCodeSigningCertificate( const char * pcCertificatePem );

void startOtaDemo( void )
{
    otaPal_SetCodeSigningCertificate( pcAwsCodeSigningCertPem );
}
