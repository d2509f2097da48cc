/* Placeholder: the demo's firmware is not part of this skeleton; only the files the tool reads are. */
void app_main( void )
{
}
