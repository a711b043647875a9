/**
 * @file ragcore/ragcore.h
 * @brief Umbrella header: include this to use ragcore.
 */
#ifndef RAGCORE_RAGCORE_H
#define RAGCORE_RAGCORE_H

#include "ragcore/common.h"
#include "ragcore/sys/embed_provider.h"
#include "ragcore/sys/embed_cuda.h"
#include "ragcore/sys/queue_transport.h"
#include "ragcore/rag.h"
#include "ragcore/providers.h"
#include "ragcore/transports.h"

#endif /* RAGCORE_RAGCORE_H */
