/* Placeholder: only the files the tool reads are part of this skeleton. */
void app_main( void )
{
}
